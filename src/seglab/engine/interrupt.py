"""Stopping a training run on Ctrl-C (SIGINT) or SIGTERM without losing its steps.

A signal can arrive anywhere in a step, e.g. after the optimizer step and before the
schedule's: a checkpoint written from there would not resume exactly. So within
`StopRequest` the first signal only records the request; the training loop finishes its
step, writes a checkpoint (atomically, as every checkpoint) and raises `Interrupted`. A
second signal acts at once, as it would without seglab (the steps since the last
checkpoint are lost): a run can always be stopped.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal, after saving a checkpoint of the step it finished."""

    def __init__(self, signal_number: int, step: int):
        super().__init__(f"{signal.Signals(signal_number).name} at step {step}")
        self.signal_number = signal_number
        self.step = step


class StopRequest:
    """Within the `with` block, SIGINT and SIGTERM are requests to stop, read from
    `signal_number` (None until one arrives).

    The handler only records the signal: printing from it could interrupt a write to the
    same stream. Python runs signal handlers in the main thread only; elsewhere (a
    notebook's worker thread) the block leaves the signals as they are.
    """

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._request)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _request(self, number: int, frame) -> None:
        self.signal_number = number
        self._restore()  # a second signal acts as it normally would

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: Ctrl-C in a terminal reaches the whole process group,
    and a worker that died of it would fail the step the main process is finishing; the
    main process stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
