"""Atomic file writes, and the up-front check that an output path can be written.

A reader of the path sees either the old complete file or the new complete file, never a
half-written one, whatever interrupts the writer (a temporary file in the same folder, then
`os.replace`). Every command checks its output paths with `check_output_folder` /
`check_output_file` before it reads or computes anything, so a path it cannot write is one
line at the start, not a traceback at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seglab.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(descriptor)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    import torch  # here, not at the top: the command checks its paths before torch loads

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` as a Path, once sure that it is, or can be created as, a folder this process
    may write in; UserError naming `option` otherwise. Nothing is created."""
    path = Path(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{path}: {option} is a file; give a folder")
    _check_can_write_below(path, path, option)
    return path


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """`path` as a Path, once sure that this process may write (or replace) a file there;
    UserError naming `option` otherwise. Nothing is created."""
    path = Path(path)
    if os.path.isdir(path):
        raise UserError(f"{path}: {option} is a folder; give a file name")
    _check_can_write_below(path.parent, path, option)
    return path


def _check_can_write_below(folder: Path, path: Path, option: str) -> None:
    """`folder`'s closest existing ancestor must be a folder we may create entries in.

    The tests are the mount's read-only flag (named as such in the message) and
    `os.access`, the kernel's answer for this process (mode bits, ACLs); no probe file is
    written. Replacing a file needs only its folder to be writable, since `atomic_write`
    renames a new file onto it.
    """
    existing = next((p for p in (folder, *folder.parents) if os.path.exists(p)), Path("."))
    if not os.path.isdir(existing):
        raise UserError(f"{path}: {existing} is a file, not a folder; choose another {option}")
    if _read_only_file_system(existing):  # checked first: even root cannot write there
        raise UserError(
            f"{path}: {existing} is on a read-only file system; choose another {option} on a "
            "writable one"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"{path}: no permission to write in {existing}; choose another {option} or make "
            f"that folder writable"
        )


def _read_only_file_system(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (statvfs's ST_RDONLY flag)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:  # a file system that does not say: the access test decides
        return False
