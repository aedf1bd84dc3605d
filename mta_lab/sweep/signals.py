"""A sweep worker's signal handling: SIGINT / SIGTERM / SIGUSR2 interrupt a training in progress; between trials
they only ask the worker's loop to stop, so a storage write is never cut in half.

SIGUSR2 is what SLURM sends before a time limit (submitit asks for it 90 s ahead) and on preemption: the trial is
interrupted and requeued like on Ctrl-C, not failed (submitit's own handler would raise UncompletedJobError inside
the training: an ordinary error). This module imports nothing heavy, so that a SLURM job installs it first thing
(mta_lab/sweep/slurm.py `_worker_job`): submitit's own SIGTERM handler only logs "Bypassing signal SIGTERM", and a
`scancel` in a job's first seconds would otherwise let the worker go on to claim a trial.
"""

from __future__ import annotations

import signal
import threading

from mta_lab.critical import hold

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

WHY = {"SIGUSR2": "SIGUSR2: the job's time limit or a preemption", "SIGINT": "Ctrl-C"}


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


class WorkerSignals:
    """Within the block: a signal sets `stop` (and `name`); while `training`, the first one also raises
    KeyboardInterrupt (held to the end of an MLflow write in progress). Handlers are set in the main thread only."""

    def __init__(self) -> None:
        self.stop = False
        self.training = False
        self.name = ""
        self._old: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        first = not self.stop
        self.stop = True
        self.name = self.name or signal.Signals(signum).name
        if self.training and first and not hold(_keyboard_interrupt):  # inside an MLflow write: raised after it
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
