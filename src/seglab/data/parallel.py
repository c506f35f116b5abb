"""One function over many files, in a process pool sized by the cores this process may use.

Reading 100k image headers takes seconds of Python per core (Pillow's plugins are Python),
and decoding every image and mask (`seglab data check`) minutes; both are independent per
file. The pool forks (workers inherit the caller's state, nothing is pickled but the items
and results); the caller's objects are frozen out of the garbage collector first, so that
a worker's collections do not touch, and copy, every page of a large parsed JSON.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any

from seglab.progress import progress

SHOWN_FROM = 1000  # items: a shorter loop ends within about a second, without a display
_POOL_FROM = 64  # items per worker below which a pool costs more than it saves


def usable_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def map_files(
    function: Callable[[Any], Any],
    items: Sequence,
    *,
    desc: str,
    unit: str = "image",
    workers: int | None = None,
    shown_from: int = SHOWN_FROM,
) -> list:
    """`[function(item) for item in items]`, in order, over `workers` processes (default:
    the usable cores), with a progress display from `shown_from` items.

    `function` must be a module-level function (workers find it by name) and must not
    raise for one bad item: return the problem instead, so that every item is seen.
    """
    if workers is None:
        workers = min(usable_cores(), len(items) // _POOL_FROM)
    shown = len(items) >= shown_from
    with progress(desc=desc, total=len(items), unit=unit, enabled=shown) as bar:
        if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
            return [_counted(function, item, bar) for item in items]
        chunk = max(1, min(256, len(items) // (workers * 8)))
        gc.freeze()  # the caller's objects stay out of the workers' collections
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = []
                for result in pool.imap(function, items, chunksize=chunk):
                    results.append(result)
                    bar.update(1)
                return results
        finally:
            gc.unfreeze()


def _counted(function: Callable[[Any], Any], item: Any, bar) -> Any:
    result = function(item)
    bar.update(1)
    return result
