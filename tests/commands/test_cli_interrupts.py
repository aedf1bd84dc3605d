"""Real signals on a real `mta-lab train` process: SIGINT and SIGTERM print one line, exit 128 + the signal
(130, 143) and mark the MLflow run KILLED with the signal in a tag; a resumed run that finishes drops the failure
tags and keeps the history of its interruptions in `mta.interruptions`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from integration_helpers import REPO, clean_env, cli_command, client_for, run_cli, runs_in, sqlite_uri, tiny


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*cli_command(*args), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=clean_env(), start_new_session=True)


def _signal_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path, signum: int, timeout: float = 180) -> str:
    """Wait for the first checkpoint, send `signum`, return stderr once the process has ended."""
    deadline = time.monotonic() + timeout
    try:
        while not list((run_dir / "checkpoints").glob("step-*.ckpt")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before the signal: {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint after {timeout} s")
            time.sleep(0.05)
        os.kill(proc.pid, signum)
        _, stderr = proc.communicate(timeout=60)
        return stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_prints_one_line_exits_128_plus_it_and_marks_the_run_killed(tmp_path, data_cache, signum, code):
    root, name = tmp_path / "runs", "sig"
    args = tiny(root, name, data_cache, max_steps=100_000, ckpt_every=5)
    proc = _start(args)
    stderr = _signal_after_first_checkpoint(proc, root / name, signum)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Detected KeyboardInterrupt" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and signum.name in lines[0] and "resume=auto" in lines[0], stderr
    (run,) = runs_in(sqlite_uri(root))
    assert run.info.status == "KILLED"
    assert run.data.tags["mta.signal"] == signum.name
    assert signum.name in run.data.tags["mta.failure_reason"]
    assert signum.name in run.data.tags["mta.interruptions"]


def test_a_resumed_run_that_finishes_drops_the_failure_tags_and_keeps_the_history(tmp_path, data_cache):
    root, name = tmp_path / "runs", "again"
    proc = _start(tiny(root, name, data_cache, max_steps=100_000, ckpt_every=5))
    stderr = _signal_after_first_checkpoint(proc, root / name, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    steps = max(int(p.stem.split("-")[1]) for p in (root / name / "checkpoints").glob("step-*.ckpt"))
    result = run_cli(*tiny(root, name, data_cache, max_steps=steps + 3, ckpt_every=5), "resume=auto")
    assert result.returncode == 0, result.stderr
    (run,) = runs_in(sqlite_uri(root))
    assert run.info.status == "FINISHED"
    assert "mta.failure_reason" not in run.data.tags and "mta.signal" not in run.data.tags
    assert "SIGTERM" in run.data.tags["mta.interruptions"]
    client_for(sqlite_uri(root)).get_run(run.info.run_id)  # the run is readable
