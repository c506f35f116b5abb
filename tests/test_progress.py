"""Progress display: a bar on a terminal, a line every N seconds in a log, nothing if quiet."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from seglab import progress as progress_module
from seglab.progress import LineProgress, progress, quiet


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_prints_every_interval_and_once_at_the_end():
    clock, stream = FakeClock(), io.StringIO()
    bar = LineProgress(desc="train", total=10, unit="step", initial=2, interval_s=30,
                       stream=stream, clock=clock)  # fmt: skip
    with bar:
        for _ in range(8):
            clock.now += 10  # one step every 10 s: a line after 30 s, 60 s
            bar.set_postfix(loss="0.5")
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "train: 5/10 step (50%), 00:30 elapsed, 0.1 step/s, loss=0.5",
        "train: 8/10 step (80%), 01:00 elapsed, 0.1 step/s, loss=0.5",
        "train: 10/10 step (100%), 01:20 elapsed, 0.1 step/s, loss=0.5",
    ]


def test_line_progress_over_an_iterable_and_no_end_line_after_an_error():
    clock, stream = FakeClock(), io.StringIO()
    items = list(LineProgress([1, 2, 3], desc="eval", unit="batch", stream=stream, clock=clock))
    assert items == [1, 2, 3]
    assert stream.getvalue() == "eval: 3/3 batch (100%), 00:00 elapsed\n"
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), LineProgress(desc="train", total=5, stream=stream):
        raise KeyboardInterrupt  # the command says what happened instead
    assert stream.getvalue() == ""


def test_progress_is_a_bar_on_a_terminal_lines_in_a_log_and_nothing_when_quiet(monkeypatch):
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress([1], desc="x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False, raising=False)
    assert isinstance(progress([1], desc="x"), LineProgress)
    assert progress([1], desc="x", enabled=False).disable
    with quiet():
        silent = progress([1, 2], desc="x")
        assert silent.disable and list(silent) == [1, 2]
    assert isinstance(progress([1], desc="x"), LineProgress)  # the block's end restores it
