"""What a dataset found wrong with its files, gathered before anything trains.

Datasets check their files when they are built (headers, annotations, mask values) and put
each problem in a `Findings`: a problem that stops training (a missing file, a mask value
that is no class) or one that is handled and counted (a box clipped to its image, a
polygon with fewer than 3 points dropped). Built for training or evaluation, a dataset
raises the first stopping problem as one `UserError` line naming its files, and warns with
one line per split for the handled ones (a `SeglabWarning`, which the CLI prints as
`seglab train: warning: ...`). `seglab data check` passes its own `Findings` and tabulates
everything instead.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from seglab.errors import SeglabWarning, UserError

STOPS = "stops training"  # the action of a problem that training cannot get past
_SHOWN = 3  # places named after the first one in an error line


@dataclass
class Finding:
    """Every occurrence of one kind of problem.

    Attributes:
        kind: short name, e.g. "box partly outside its image".
        action: what seglab does about it: "clipped", "dropped", ... or `STOPS`.
        message: the one-line message of the first occurrence (names the file, says the fix).
        places: the file (or "file annotation <id>") of each occurrence, in the order found.
    """

    kind: str
    action: str
    message: str
    places: list[str] = field(default_factory=list)

    @property
    def stops(self) -> bool:
        return self.action == STOPS


class Findings:
    """The problems of one or more splits, by kind, in the order first found."""

    def __init__(self) -> None:
        self.by_kind: dict[str, Finding] = {}

    def add(self, kind: str, place: str, message: str, action: str = STOPS) -> None:
        """One occurrence of `kind` at `place`; `message` is kept for the first one only."""
        finding = self.by_kind.setdefault(kind, Finding(kind, action, message))
        finding.places.append(place)

    def stopping(self) -> list[Finding]:
        return [f for f in self.by_kind.values() if f.stops]

    def handled(self) -> list[Finding]:
        return [f for f in self.by_kind.values() if not f.stops]

    def raise_first(self) -> None:
        """UserError with the first stopping problem, naming a few more files like it."""
        for finding in self.stopping():
            more = finding.places[1:]
            if not more:
                raise UserError(finding.message)
            shown = ", ".join(more[:_SHOWN]) + (", ..." if len(more) > _SHOWN else "")
            raise UserError(f"{finding.message} ({len(more)} more like it: {shown})")

    def note_line(self, subject: str) -> str | None:
        """'SUBJECT: kind: N action; ...' for the handled problems, or None."""
        parts = [f"{f.kind}: {len(f.places)} {f.action}" for f in self.handled()]
        if not parts:
            return None
        return f"{subject}: {'; '.join(parts)} (seglab data check lists them)"

    def conclude(self, subject: str) -> None:
        """For a dataset built to be used: raise the first stopping problem, else warn with
        the note line of the handled ones."""
        self.raise_first()
        line = self.note_line(subject)
        if line:
            warnings.warn(line, SeglabWarning, stacklevel=3)
