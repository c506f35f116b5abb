"""`RUN/train.log`: what `seglab train` printed, kept with the run.

`Transcript` stands in for `sys.stdout` and `sys.stderr`: everything still goes to the
terminal (or the job's log), and every finished line also goes to the file. Lines printed
before the run folder exists (the config's warnings) wait in memory until it does. A
progress bar's redraws (`\\r`) keep their last state only, so the file holds one line per
bar where the terminal showed it moving. A resumed run appends to the same file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from seglab.engine.run_dir import CONFIG_NAME

TRANSCRIPT_NAME = "train.log"


@contextmanager
def transcript(run_dir: Path) -> Iterator[None]:
    """Within the block, what is printed also goes to `run_dir/train.log`, from the moment
    the run folder holds its config (a refused run writes nothing)."""
    pending: list[str] = []
    out = Transcript(sys.stdout, pending, run_dir)
    err = Transcript(sys.stderr, pending, run_dir)
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out.stream, err.stream
        out.close()
        err.close()


class Transcript:
    """A text stream that writes to `stream` and, line by line, to `run_dir/train.log`."""

    def __init__(self, stream: TextIO, pending: list[str], run_dir: Path):
        self.stream = stream
        self.pending = pending  # finished lines before the file is open, shared by both streams
        self.run_dir = run_dir
        self.file: TextIO | None = None
        self.partial = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        *lines, self.partial = (self.partial + text).split("\n")
        self.pending.extend(line.rsplit("\r", 1)[-1] + "\n" for line in lines)
        if self.pending and self._file() is not None:
            self.file.writelines(self.pending)
            self.pending.clear()
            self.file.flush()
        return len(text)

    def _file(self) -> TextIO | None:
        """The log, opened once the trainer has written the run's config (`run_dir.py`)."""
        if self.file is None and (self.run_dir / CONFIG_NAME).is_file():
            self.file = (self.run_dir / TRANSCRIPT_NAME).open("a", encoding="utf-8")
        return self.file

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def close(self) -> None:
        """Write the unfinished line too (to the file only), and close the file."""
        if self.partial.strip() and self._file() is not None:
            self.file.write(self.partial.rsplit("\r", 1)[-1] + "\n")
        if self.file is not None:
            self.file.close()

    def __getattr__(self, name: str):  # encoding, fileno, ... of the real stream
        return getattr(self.stream, name)
