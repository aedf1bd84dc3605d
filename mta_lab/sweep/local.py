"""`run --workers N`: N worker processes on this machine against the sweep's study.

Each worker is `python -m mta_lab.cli sweep worker SWEEP_FILE --dir DIR`. Ctrl-C (SIGINT) or SIGTERM is forwarded
to the workers as SIGINT: each ends its running trial (MLflow: KILLED), puts it back in the queue and exits; a
worker still alive after `grace_s` is killed and its trial reaped. Running `run` again continues the study.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mta_lab.errors import UsageError
from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.study import create


@dataclass
class RunSummary:
    workers: int
    return_codes: list[int]
    interrupted: bool


def worker_command(spec: SweepSpec, sweep_dir: Path) -> list[str]:
    if spec.source is None:
        raise ValueError(f"sweep {spec.name}: local workers need the sweep file on disk (SweepSpec.load(path))")
    return [sys.executable, "-m", "mta_lab.cli", "sweep", "worker", str(Path(spec.source).resolve()),
            "--dir", str(sweep_dir)]


def parse_gpu_ids(text: str | None) -> list[str] | None:
    """'0,1,2' -> ['0', '1', '2']; None stays None (workers inherit the environment's GPUs)."""
    if text is None:
        return None
    ids = [part.strip() for part in text.split(",")]
    if not ids or any(not part.isdigit() for part in ids):
        raise UsageError(f"--gpus {text!r}: expected a comma list of GPU ids such as 0,1,2")
    return ids


def run_local(spec: SweepSpec, sweep_dir: str | Path | None = None, *, workers: int = 1, grace_s: float = 60.0,
              gpus: list[str] | None = None, console: Console | None = None) -> RunSummary:
    """Create the sweep (idempotent), start `workers` worker processes, wait for them. Returns their exit codes.

    gpus: worker i runs with CUDA_VISIBLE_DEVICES=gpus[i % len(gpus)] (several small trainings share a GPU).
    """
    from mta_lab.sweep.status import reap

    if workers < 1:
        raise UsageError(f"--workers {workers}: must be at least 1")
    console = console or Console()
    sweep = create(spec, sweep_dir)
    reaped = reap(sweep)  # trials of workers that died in an earlier run go back in the queue
    if reaped:
        console.print(f"reaped trials {reaped} of workers that are gone")
    command = worker_command(spec, sweep.sweep_dir)
    logs = sweep.sweep_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    threads = str(max(1, (os.cpu_count() or 1) // workers))  # N workers x all cores each would thrash the CPU
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, threads)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    interrupted = False

    def forward(signum, frame) -> None:
        nonlocal interrupted
        interrupted = True
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(workers):
            log = open(logs / f"worker-{stamp}-{i}.log", "w")  # noqa: SIM115 - closed with the process
            worker_env = {**env, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else env
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=worker_env))
            log.close()
        where = f" on GPUs {','.join(gpus)}" if gpus else ""
        console.print(f"sweep {spec.name}: {workers} worker(s) started{where}, logs in {logs}", highlight=False)
        deadline = None
        while any(p.poll() is None for p in procs):
            if interrupted and deadline is None:
                deadline = time.monotonic() + grace_s
                console.print("interrupted: workers finish cleanly (their running trials go back in the queue)")
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if interrupted:
        reap(sweep, min_age_s=0.0)  # trials of a worker killed after the grace period
    codes = [p.returncode for p in procs]
    return RunSummary(workers, codes, interrupted)
