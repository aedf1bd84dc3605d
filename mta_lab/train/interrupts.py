"""SIGINT and SIGTERM during a training run: the first one raises TrainingInterrupted in the main thread (later
ones are ignored while the run is marked KILLED and closed); the command exits with 128 + the signal number."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mta_lab.critical import hold

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(BaseException):
    """A run stopped by a signal. A BaseException, like KeyboardInterrupt: `except Exception` does not swallow it.
    `step` and `run_id` are filled in by the training entry once it knows them."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.signal_name = signal.Signals(signum).name
        self.step: int | None = None
        self.run_id: str | None = None
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def _raise(signum: int) -> None:
    raise TrainingInterrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT / SIGTERM raise TrainingInterrupted once. Lightning's own SIGTERM handler, set
    during `fit`, calls this one after its own, so the signal still reaches us there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame) -> None:
        nonlocal fired
        if fired:
            return  # the run is being closed: a second Ctrl-C must not cut that short
        fired = True
        if not hold(lambda: _raise(signum)):  # inside a database write: raised once the write is done
            _raise(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
