"""Sections that a signal must not cut in half, such as a write to the tracking database.

A signal handler that raises can land anywhere in the main thread, e.g. between a sqlite INSERT and its COMMIT:
the exception's traceback then keeps that connection, and its open transaction, alive, so the database stays
locked and the run cannot be marked KILLED ("database is locked" five seconds later). A handler that would raise
calls `hold(raise_it)` first: inside a `critical()` section (main thread) the raise waits for the section's end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_depth = 0
_held: Callable[[], None] | None = None


@contextmanager
def critical() -> Iterator[None]:
    """A signal held during the block is raised when the outermost section ends (other threads: no effect)."""
    global _depth, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _held is not None:
            raise_it, _held = _held, None
            raise_it()


def hold(raise_it: Callable[[], None]) -> bool:
    """In a critical section: keep `raise_it` for the section's end and return True; outside one, False."""
    global _held
    if _depth == 0:
        return False
    _held = raise_it
    return True


class GuardedClient:
    """An MLflow client (or any object) whose every method call runs as a critical section."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def guarded(*args, **kwargs):
            with critical():
                return attr(*args, **kwargs)

        return guarded
