"""`submit`: the sbatch path through submitit's real SlurmExecutor (with stand-in sbatch/srun commands that only
record the script), and end to end with submitit's LocalExecutor (the same pickled worker, minus sbatch)."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from mta_lab.sweep.slurm import ClusterProfile, sbatch_script, submit, submit_jobs
from mta_lab.sweep.spec import SweepSpec

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def _fake_slurm(bin_dir: Path, capture: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {capture}\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(stat.S_IRWXU)


def test_submit_writes_one_job_array_through_sbatch(tmp_path, monkeypatch):
    capture = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", capture)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    spec = SweepSpec.load(SWEEPS / "tiny" / "table5_cpu.yaml")
    # The example profile's PostgreSQL host does not exist here, and submit creates the study before it submits:
    # point the profile's storage at a reachable database (a sqlite file through the same RDB path).
    profile = replace(ClusterProfile.load("example_slurm"), storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    sweep_dir = (tmp_path / "sweep").resolve()

    ids = submit(spec, sweep_dir, cluster=profile, workers=3, executor="slurm")

    assert ids == ["4242_0", "4242_1", "4242_2"]
    script = capture.read_text()
    assert script == sbatch_script(spec, sweep_dir, profile, workers=3)  # the dry run shows what sbatch gets
    for flag in ("--array=0-2%3", "--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--time=2880"):
        assert f"#SBATCH {flag}" in script.splitlines()
    assert "module load cuda/12.4" in script and script.index("module load") < script.index("\nsrun ")
    # one pickled worker call per array index, with the profile's storage replacing the sweep file's (and the
    # study already created there, its fixed trials enqueued once)
    import pickle

    for index in range(3):
        pickled = sweep_dir / "submitit" / f"4242_{index}" / f"4242_{index}_submitted.pkl"
        assert pickled.is_file()
        delayed = pickle.loads(pickled.read_bytes())
        sent_spec, sent_dir, env, _ = delayed.args
        assert sent_spec.storage == profile.storage and sent_dir == str(sweep_dir)
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"


@pytest.mark.slow
def test_two_local_workers_run_a_tiny_sweep_to_completion(tmp_path, data_cache):
    import optuna

    from mta_lab.sweep.storage import open_storage

    spec = SweepSpec.from_dict({
        "name": "submit_e2e", "kind": "ablation",
        "base": ["experiment=tiny", f"root={tmp_path / 'runs'}", f"data.cache_dir={data_cache}",
                 "trainer=cpu", "train.max_steps=4", "train.val_every=4", "train.ckpt_every=4", "train.log_every=2",
                 "train.val_batches=1", "train.batch_size=4", "train.seq_len=32"],
        "seeds": [0, 1],
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        "ablation": {"variants": {"transformer": ["attention=transformer"], "mta": ["attention=t5_kq_4x9"]}},
    })
    sweep_dir = tmp_path / "sweep"

    jobs = submit_jobs(spec, sweep_dir, cluster="local", workers=2)

    assert len(jobs) == 2 and all(job.job_id.isdigit() for job in jobs)  # local jobs are processes
    summaries = [job.result() for job in jobs]  # waits; raises with the worker's traceback if one failed
    completed = [n for s in summaries for n in s.completed]
    assert sorted(completed) == [0, 1, 2, 3]  # every trial ran exactly once, split over the two workers
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec, sweep_dir))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted((t.user_attrs["variant"], t.user_attrs["seed"]) for t in trials) == [
        ("mta", 0), ("mta", 1), ("transformer", 0), ("transformer", 1)]


def test_submit_creates_the_study_once_before_any_job(tmp_path, monkeypatch):
    import optuna

    capture = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", capture)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    spec = SweepSpec.load(SWEEPS / "tiny" / "table5_cpu.yaml")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    profile = replace(ClusterProfile.load("example_slurm"), storage=storage)
    submit(spec, tmp_path / "sweep", cluster=profile, workers=2, executor="slurm")
    submit(spec, tmp_path / "sweep", cluster=profile, workers=2, executor="slurm")  # a second array: no new trials
    study = optuna.load_study(study_name=spec.name, storage=storage)
    assert len(study.trials) == len(spec.fixed_trials()) == 10
    assert all(t.state == optuna.trial.TrialState.WAITING for t in study.trials)


def test_submit_to_an_unreachable_database_fails_before_submitting(tmp_path, monkeypatch):
    from mta_lab.sweep.storage import SweepStorageError

    capture = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", capture)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    spec = SweepSpec.load(SWEEPS / "tiny" / "table5_cpu.yaml")
    closed_port = replace(ClusterProfile.load("example_slurm"), storage="postgresql+psycopg://mta@127.0.0.1:1/sweeps")
    with pytest.raises(SweepStorageError, match="cannot open the database"):
        submit(spec, tmp_path / "sweep", cluster=closed_port, workers=2, executor="slurm")
    assert not capture.exists()  # nothing reached sbatch
