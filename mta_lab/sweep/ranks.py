"""Trials that span several processes (DDP ranks started by srun): rank 0 asks the study, the others follow.

Under srun every task runs the worker. Only rank 0 (SLURM_PROCID 0) talks to Optuna; before each training it
writes a handoff record (trial number, seed, sampled params) to <sweep dir>/handoff/<job id>/<n>.json, and the
other ranks compose the same config from it and join the same training (Lightning's SLURM environment forms the
DDP group). A final record tells them to stop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TaskGroup:
    rank: int
    world: int
    job: str

    @property
    def leader(self) -> bool:
        return self.rank == 0


def task_group() -> TaskGroup:
    """This process's place among the srun tasks of its job (rank 0 of 1 outside SLURM)."""
    world = int(os.environ.get("SLURM_NTASKS", "1"))
    if world <= 1:
        return TaskGroup(0, 1, "local")
    job = os.environ.get("SLURM_JOB_ID", "job")
    return TaskGroup(int(os.environ.get("SLURM_PROCID", "0")), world, job)


class Handoff:
    """Numbered records in <sweep dir>/handoff/<job>/: written by rank 0, read in order by the other ranks."""

    def __init__(self, sweep_dir: Path, group: TaskGroup) -> None:
        self.dir = Path(sweep_dir) / "handoff" / group.job
        self.dir.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def _write(self, record: dict) -> None:
        tmp = self.dir / f".{self.count}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.rename(self.dir / f"{self.count}.json")  # atomic: a reader never sees half a record
        self.count += 1

    def announce(self, trial: int, seed: int, params: dict) -> None:
        self._write({"trial": trial, "seed": seed, "params": params})

    def finish(self) -> None:
        self._write({"stop": True})

    def next(self, timeout_s: float = 7 * 24 * 3600, poll_s: float = 0.5) -> dict:
        path = self.dir / f"{self.count}.json"
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank 0 of job {self.dir.name} wrote no record {self.count} in {timeout_s} s")
            time.sleep(poll_s)
        self.count += 1
        return json.loads(path.read_text())
