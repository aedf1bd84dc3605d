"""A SIGTERM that lands inside a tracking-database write is raised when the write is done, not in its middle (a
transaction cut in half kept sqlite locked, and the run could not be marked KILLED)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from mta_lab.critical import GuardedClient, critical
from mta_lab.train.interrupts import TrainingInterrupted, signals_raise


def _signal_self_and_wait(seconds: float = 0.2) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    end = time.monotonic() + seconds
    while time.monotonic() < end:  # the handler runs between bytecodes of this loop
        pass


def test_a_signal_inside_a_critical_section_is_raised_at_its_end():
    done = []
    with pytest.raises(TrainingInterrupted) as caught, signals_raise():
        with critical():
            with critical():
                _signal_self_and_wait()
                done.append("inner")
            done.append("outer")
        done.append("after")  # never reached: the outermost section raised
    assert done == ["inner", "outer"]
    assert caught.value.signal_name == "SIGTERM"


def test_outside_a_section_the_signal_raises_at_once():
    done = []
    with pytest.raises(TrainingInterrupted), signals_raise():
        _signal_self_and_wait()
        done.append("after")
    assert done == []


def test_a_held_signal_is_not_lost_when_the_section_fails():
    with pytest.raises(TrainingInterrupted) as caught, signals_raise():
        with critical():
            _signal_self_and_wait()
            raise ValueError("the write failed")
    assert isinstance(caught.value.__context__, ValueError)


def test_every_method_of_a_guarded_client_is_one_section():
    class Store:
        calls = 0

        def write(self, value):
            _signal_self_and_wait()
            self.calls += 1
            return value

    store = Store()
    with pytest.raises(TrainingInterrupted), signals_raise():
        GuardedClient(store).write(3)
    assert store.calls == 1  # the write finished before the signal was raised
