"""The one exception type for user mistakes.

Library code raises `UserError` for anything the user can fix (a missing file, a malformed
JSON, an unknown model name, ...). The CLI turns it into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: the message names the file and the problem."""


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return `path` as a Path, or raise UserError when it does not exist."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    return path
