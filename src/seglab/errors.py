"""The one exception type for user mistakes.

Library code raises `UserError` for anything the user can fix (a missing file, a malformed
JSON, an unknown model name, ...). The CLI turns it into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class UserError(Exception):
    """A mistake in the user's input: the message names the file and the problem."""

    def __init__(self, *args: object) -> None:
        # torch's DataLoader raises a worker's exception again in the main process as
        # `type("Caught UserError in DataLoader worker process N.\nOriginal Traceback ...")`:
        # keep the worker's own one-line message, the traceback's last line.
        text = str(args[0]) if len(args) == 1 else ""
        if text.startswith(f"Caught {type(self).__name__} in DataLoader worker"):
            last = text.rstrip().splitlines()[-1]
            args = (last.removeprefix(f"{__name__}.{type(self).__name__}: "),)
        super().__init__(*args)


def did_you_mean(given: str, known: Iterable[str], prefix: str = "") -> str:
    """`" (did you mean train.lr?)"` for the known name closest to `given` (difflib's ratio
    of at least 0.6, its default), or "" when none is close. `prefix` is shown before the
    name but not compared (`train.` would make every `train.` key look close)."""
    close = difflib.get_close_matches(given, [str(name) for name in known], n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


class SeglabWarning(UserWarning):
    """A setting or an input that works, but probably not as the user meant (a warmup
    longer than the run, a batch larger than the dataset): the CLI prints it as one line."""


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return `path` as a Path, or raise UserError when it does not exist."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    return path


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The decoded contents of the JSON file `path`; UserError when missing or malformed."""
    path = require_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: malformed JSON ({error}); fix or regenerate the file") from None
