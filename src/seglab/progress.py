"""Progress display for long loops (training steps, evaluation batches, images, tiles).

On a terminal it is a tqdm bar. When stderr is a file or a pipe (`make demo > log 2>&1`, a
job scheduler's log) a redrawn bar would leave one line per refresh, thousands in all; there
it is a plain line every `LOG_INTERVAL_S` seconds and one at the end instead. Within
`quiet()` (the command line's `--quiet`) every display of the process is silent, as under a
logging level: the loops that show progress are deep in library code the CLI does not
parametrise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between two progress lines in a log

_quiet = False


@contextmanager
def quiet(silent: bool = True) -> Iterator[None]:
    """Within the block, every progress display of the process is silent (or not)."""
    global _quiet
    before, _quiet = _quiet, silent
    try:
        yield
    finally:
        _quiet = before


def status(message: str) -> None:
    """One line on stderr before a long step that has no loop to count (an ONNX export);
    silent within `quiet()`."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
) -> Any:
    """A progress display over `iterable`, or driven by `update(n)`: a tqdm bar on a
    terminal, a `LineProgress` in a log, a silent tqdm when quiet or not `enabled`.

    All three iterate over `iterable` and offer `update`, `set_postfix`, `close` and `with`.
    """
    if _quiet or not enabled:
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial,
                    dynamic_ncols=True)  # fmt: skip
    return LineProgress(iterable, desc=desc, total=total, unit=unit, initial=initial)


class LineProgress:
    """Progress as plain lines on stderr: one every `interval_s` seconds, one at the end.

    `desc: 120/600 step (20%), 1:02 elapsed, 1.9 step/s, loss=0.43` — the end line only when
    the loop completes (an error or an interruption says what happened instead).
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        initial: int = 0,
        interval_s: float | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self._start_n = initial
        self.postfix: dict[str, Any] = {}
        self.interval_s = LOG_INTERVAL_S if interval_s is None else interval_s
        self.stream, self.clock = stream, clock
        self._started = self._last_line = clock()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        self._closed = True

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._print(self.clock())

    def _print(self, now: float) -> None:
        elapsed = now - self._started
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        if self.total:
            done += f" {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        parts = [done, f"{tqdm.format_interval(elapsed)} elapsed"]
        if elapsed > 0 and self.n > self._start_n:
            parts.append(f"{(self.n - self._start_n) / elapsed:.3g} {self.unit}/s")
        parts += [f"{name}={value}" for name, value in self.postfix.items()]
        print(f"{self.desc}: {', '.join(parts)}", file=self.stream or sys.stderr, flush=True)
