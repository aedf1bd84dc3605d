"""Interruptions of a sweep worker, as a cluster delivers them: SIGUSR2 (SLURM's warning before a time limit, and a
preemption) requeues the trial as interrupted, not failed, and the next attempt continues the same run directory
and MLflow run from its newest checkpoint. Submit remembers a profile's storage and refuses a finished sweep."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from integration_helpers import REPO, clean_env
from optuna.trial import TrialState

from mta_lab.sweep.slurm import ClusterProfile, SweepFinished, submit
from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.status import counts, render_status
from mta_lab.sweep.study import open_sweep
from mta_lab.sweep.worker import FAILURE, FAILURE_KIND, run_worker


def _sweep_file(tmp_path: Path, cache: Path, steps: int, ckpt_every: int) -> Path:
    base = ["experiment=tiny", "trainer=cpu", f"train.max_steps={steps}", f"train.val_every={steps}",
            f"train.ckpt_every={ckpt_every}", "train.batch_size=2", "train.seq_len=32", "train.val_batches=1",
            "train.log_every=1", f"data.cache_dir={cache}"]
    data = {"name": "cut", "kind": "ablation", "base": base, "seeds": [0],
            "ablation": {"variants": {"a": ["attention=transformer"]}}}
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _runs(sweep) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep.tracking_uri)
    exp = client.get_experiment_by_name(sweep.experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("mta.role") != "sweep"]


@pytest.mark.slow
def test_sigusr2_requeues_the_trial_as_interrupted_and_the_next_attempt_resumes_its_run(tmp_path, data_cache):
    path = _sweep_file(tmp_path, data_cache, steps=150, ckpt_every=5)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    worker = subprocess.Popen([sys.executable, "-m", "mta_lab.cli", "sweep", "worker", str(path), "--dir",
                               str(sweep_dir)], cwd=REPO, env=clean_env(OMP_NUM_THREADS="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        from test_sweep_engine import wait_for

        wait_for(lambda: list(sweep_dir.glob("runs/*/checkpoints/step-*.ckpt")), 240, "a first checkpoint")
        worker.send_signal(signal.SIGUSR2)  # what SLURM sends 90 s before the time limit (submitit's --signal)
        out, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert "Traceback" not in out, out
    sweep = open_sweep(spec, sweep_dir)
    stopped, queued = sweep.study.get_trials()
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[FAILURE_KIND] == "interrupted"
    assert "SIGUSR2" in stopped.user_attrs[FAILURE] and queued.state == TrialState.WAITING
    n = counts(sweep)
    assert (n["interrupted"], n["failed"], n["waiting"]) == (1, 0, 1)
    (killed,) = _runs(sweep)
    assert killed.info.status == "KILLED" and "time limit" in killed.data.tags["mta.failure_reason"]
    run_dir = Path(stopped.user_attrs["mta.run_dirs"][0])
    kept = max(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*.ckpt"))

    summary = run_worker(spec, sweep_dir=sweep_dir)

    assert summary.completed == [queued.number]
    (run,) = _runs(sweep)  # the same MLflow run, continued: not a second one
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert "SIGUSR2" not in run.data.tags.get("mta.failure_reason", "") and run.data.tags["mta.interruptions"]
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient(sweep.tracking_uri).get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(150))  # every step logged once: resumed at a checkpoint, nothing replayed
    assert (run_dir / "final" / "metrics.json").is_file() and kept >= 5
    shown = _status_text(sweep)
    assert "interrupted" in shown and "failed" in shown


def _status_text(sweep) -> str:
    from rich.console import Console

    console = Console(record=True, width=200)
    render_status(sweep, console)
    return console.export_text()


def test_submit_remembers_the_profiles_storage_and_refuses_a_finished_sweep(tmp_path, data_cache, monkeypatch):
    capture = tmp_path / "submitted.sh"
    from test_sweep_submit import _fake_slurm

    _fake_slurm(tmp_path / "bin", capture)  # a stand-in sbatch that records the script
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    path = _sweep_file(tmp_path, data_cache, steps=2, ckpt_every=2)
    spec, sweep_dir = SweepSpec.load(path), (tmp_path / "sweep").resolve()
    url = f"sqlite:///{tmp_path / 'optuna.db'}"  # an RDB storage named by the profile only (PostgreSQL on a cluster)
    profile = replace(ClusterProfile.load("example_slurm"), storage=url)

    assert submit(spec, sweep_dir, cluster=profile, workers=2, executor="slurm") == ["4242_0", "4242_1"]

    remembered = sweep_dir / "storage.url"
    assert remembered.read_text().strip() == url and stat.S_IMODE(remembered.stat().st_mode) == 0o600
    assert spec.storage is None and open_sweep(spec, sweep_dir).study.get_trials()  # the file's spec finds it
    status = subprocess.run([sys.executable, "-m", "mta_lab.cli", "sweep", "status", str(path), "--dir",
                             str(sweep_dir)], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "waiting" in status.stdout, status.stdout + status.stderr
    assert not (sweep_dir / "optuna.journal").exists()  # no second, empty journal study beside it

    run_worker(spec, sweep_dir=sweep_dir)  # the sweep's one trial, here
    capture.unlink()
    with pytest.raises(SweepFinished, match="nothing left to run.*--force"):
        submit(spec, sweep_dir, cluster=profile, workers=2, executor="slurm")
    assert not capture.exists()  # nothing reached sbatch
    assert submit(spec, sweep_dir, cluster=profile, workers=2, executor="slurm", force=True) == ["4242_0", "4242_1"]


@pytest.mark.slow
def test_a_worker_killed_on_another_host_is_taken_over_by_the_last_worker(tmp_path, data_cache, monkeypatch):
    """kill -9 of a worker whose trial says it runs on another node: the surviving worker, with nothing else
    to start, does not leave; once the dead trial's heartbeat file is stale it reaps, retries and finishes it."""
    monkeypatch.setenv("MTA_SWEEP_HEARTBEAT_S", "1")
    monkeypatch.setenv("MTA_SWEEP_GRACE_S", "4")
    path = _sweep_file(tmp_path, data_cache, steps=100, ckpt_every=50)
    data = yaml.safe_load(path.read_text())
    data["ablation"]["variants"]["b"] = ["attention=transformer", "optim.lr=1e-3"]
    data.update(max_retries=1, max_failures=1)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    env = clean_env(OMP_NUM_THREADS="1", MTA_SWEEP_HEARTBEAT_S="1", MTA_SWEEP_GRACE_S="4")
    doomed = subprocess.Popen([sys.executable, "-m", "mta_lab.cli", "sweep", "worker", str(path), "--dir",
                               str(sweep_dir), "--max-trials", "1"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        from test_sweep_engine import wait_for

        wait_for(lambda: list(sweep_dir.glob("heartbeats/trial-*")) and list(sweep_dir.glob("runs/*/mlflow_run_id")),
                 240, "the first worker training")
        sweep = open_sweep(spec, sweep_dir)
        (running,) = sweep.study.get_trials(states=(TrialState.RUNNING,))
        # The pid check only works on the worker's own host: say the trial runs elsewhere, as on a cluster.
        sweep.study._storage.set_trial_user_attr(running._trial_id, "mta.host", "another-node")
        doomed.kill()  # kill -9
        doomed.wait()
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()

    summary = run_worker(spec, sweep_dir=sweep_dir)

    trials = open_sweep(spec, sweep_dir).study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    (dead,) = [t for t in trials if t.state == TrialState.FAIL]
    assert dead.number == running.number and "no heartbeat" in dead.user_attrs[FAILURE]
    done = sorted(t.user_attrs["variant"] for t in trials if t.state == TrialState.COMPLETE)
    assert done == ["a", "b"] and len(summary.completed) == 2
    statuses = sorted(r.info.status for r in _runs(open_sweep(spec, sweep_dir)))
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]
    assert not list(sweep_dir.glob("heartbeats/trial-*"))
