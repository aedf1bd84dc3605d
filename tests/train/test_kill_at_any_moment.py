"""Kills at the moments between two records of a run, and at random moments: `resume=auto` always ends in one
FINISHED MLflow run whose history equals an uninterrupted run's, and no run of the directory is left RUNNING.

The random mode kills `mta-lab train` (a real process, SIGKILL) at a uniformly drawn moment of its wall time,
again and again, resuming each time. CI runs it a fixed number of rounds (`MTA_LAB_KILL_ROUNDS`, default 4) with a
fresh seed each time; the seed is in every failure message, and `MTA_LAB_KILL_SEED=<seed>` replays a series.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from integration_helpers import REPO, clean_env, cli_command, client_for, history, runs_in, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train

ROUNDS = int(os.environ.get("MTA_LAB_KILL_ROUNDS", "4"))
STEPS, VAL_EVERY = 24, 6


def _args(root: Path, name: str, cache: Path) -> list[str]:
    return tiny(root, name, cache, max_steps=STEPS, val_every=VAL_EVERY, val_batches=2, ckpt_every=4,
                keep_checkpoints=3)


def _runs_of(uri: str, run_dir: Path) -> list:
    return runs_in(uri, filter_string=f"tags.`mta.run_dir` = '{run_dir.resolve()}'")


def _check_one_finished_run(uri: str, run_dir: Path, reference_uri: str, reference_id: str, context: str) -> None:
    runs = _runs_of(uri, run_dir)
    statuses = sorted(r.info.status for r in runs)
    assert "RUNNING" not in statuses, f"{context}: a run is left RUNNING ({statuses})"
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1, f"{context}: {statuses}"
    assert all(s in ("FINISHED", "KILLED") for s in statuses), f"{context}: {statuses}"
    run = finished[0]
    assert "mta.failure_reason" not in run.data.tags, context
    assert run.data.metrics["final/steps"] == STEPS, context
    client, reference = client_for(uri), client_for(reference_uri)
    for key in ("train/loss", "val/loss", "val/ppl", "lr"):
        got, expected = history(client, run.info.run_id, key), history(reference, reference_id, key)
        assert steps_of(got) == steps_of(expected), f"{context}: {key} steps {steps_of(got)}"
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-5), f"{context}: {key}"
    assert (run_dir / "final" / "model.pt").is_file(), context
    assert json.loads((run_dir / "final" / "metrics.json").read_text())["final/steps"] == STEPS, context
    leftovers = [p for p in run_dir.rglob("*.tmp")]
    assert not leftovers, f"{context}: temporaries left: {leftovers}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_cache):
    root = tmp_path_factory.mktemp("reference")
    result = train(load_run_config(_args(root, "reference", data_cache)), progress=False)
    return result.tracking_uri, result.run_id


# SIGKILLs its own process when `<module>.<function>` is called with a path named `target` as argument `index`.
_KILL_ON_WRITE = textwrap.dedent("""
    import importlib, os, signal, sys
    from pathlib import Path
    from mta_lab.conf import load_run_config
    from mta_lab.train.entry import train

    module, function, index, target = sys.argv[1:5]
    owner = importlib.import_module(module)
    original = getattr(owner, function)

    def killing(*args, **kw):
        if Path(args[int(index)]).name == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kw)

    setattr(owner, function, killing)
    train(load_run_config(sys.argv[5:]), progress=False)
""")


@pytest.mark.parametrize(("module", "function", "index", "target", "moment"), [
    # write_text_atomic(path, text): the MLflow run exists, its id is not yet in the run directory
    ("mta_lab.train.entry", "write_text_atomic", "0", "mlflow_run_id", "before the run id is recorded"),
    # atomic_torch_save(obj, path): the last checkpoint is written, the export and the FINISHED record are not
    ("mta_lab.train.atomic_io", "atomic_torch_save", "1", "model.pt", "after the last checkpoint"),
])
def test_a_kill_between_two_records_resumes_to_one_finished_run(tmp_path, data_cache, reference, module, function,
                                                                 index, target, moment):
    args = _args(tmp_path, "between", data_cache)
    killed = subprocess.run([sys.executable, "-c", _KILL_ON_WRITE, module, function, index, target, *args],
                            capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_dir = tmp_path / "between"
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert [r.info.status for r in _runs_of(uri, run_dir)] == ["RUNNING"]  # what the kill left

    train(load_run_config([*args, "resume=auto"]), progress=False)
    _check_one_finished_run(uri, run_dir, *reference, context=f"killed {moment}")


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing(tmp_path, data_cache, reference):
    seed = int(os.environ.get("MTA_LAB_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    args = [*_args(tmp_path, "random", data_cache), "resume=auto", "--no-progress"]
    run_dir, uri = tmp_path / "random", f"sqlite:///{tmp_path.resolve()}/mlflow.db"

    def launch() -> subprocess.Popen:
        return subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO, env=clean_env(), start_new_session=True)

    # One uninterrupted CLI run of this length, to draw kill moments over its whole wall time (start-up included).
    started = time.monotonic()
    probe = subprocess.run(cli_command(*_args(tmp_path, "probe", data_cache), "--no-progress"), capture_output=True,
                           text=True, cwd=REPO, env=clean_env(), timeout=240)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    wall = time.monotonic() - started

    def finished() -> bool:  # a kill after the run's last record: a resume would have nothing left to do
        return (run_dir / "final" / "metrics.json").is_file()

    moments = []
    for _ in range(ROUNDS):
        if finished():
            break
        moment = rng.uniform(0.0, wall)
        moments.append(round(moment, 2))
        proc = launch()
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        output = proc.stdout.read()
        context = f"seed {seed}, kills at {moments} s of {wall:.1f} s"
        assert proc.returncode in (0, -signal.SIGKILL), f"{context}: exit {proc.returncode}\n{output[-3000:]}"
        if proc.returncode == 0:
            break
    if proc.returncode != 0 and not finished():
        proc = launch()
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{context}: the last resume failed\n{output[-3000:]}"
    _check_one_finished_run(uri, run_dir, *reference, context=context)
