"""Sweeps on a real SLURM cluster (one node: .ci/slurm-cluster.sh start, which .ci/run calls): real `mta-lab sweep
create` + `mta-lab sweep submit --cluster <profile>` through sbatch job arrays, the journal file beside the sweep,
trial states polled from the Optuna study. A normal sweep (and a second submit, refused); a time limit hit
mid-trial; kill -9 of a worker mid-trial; `scancel` in a job's first seconds. Skipped, saying why, where sbatch /
squeue are missing or the cluster does not answer. One xdist group: the node's CPUs are the cluster's."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from integration_helpers import REPO, clean_env
from optuna.trial import TrialState

from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.status import counts
from mta_lab.sweep.study import open_sweep
from mta_lab.sweep.worker import FAILURE, FAILURE_KIND

pytestmark = [pytest.mark.xdist_group("slurm"), pytest.mark.slow]


def _cluster_answers() -> str | None:
    """Why the cluster cannot be used here, or None."""
    missing = [c for c in ("sbatch", "squeue", "scancel", "scontrol", "sinfo") if shutil.which(c) is None]
    if missing:
        return f"no SLURM client ({', '.join(missing)} not on PATH); start one with `.ci/slurm-cluster.sh start`"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the SLURM controller does not answer (scontrol ping timed out)"
    if "UP" not in ping.stdout:
        return f"the SLURM controller is not up ({' '.join((ping.stdout + ping.stderr).split())})"
    if not re.search(r"^(idle|mixed|allocated)", nodes.stdout, re.M):
        return f"no SLURM node takes jobs (sinfo: {' '.join(nodes.stdout.split()) or 'none'})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = _cluster_answers()
    if why:
        print(f"\nSKIP real-SLURM tests: {why}")
        pytest.skip(why)


def wait_for(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sweep_file(tmp_path: Path, cache: Path, name: str, steps: int, variants: int = 2, ckpt_every: int = 0,
                longer: int = 0) -> Path:
    """An ablation of `variants` tiny CPU trials of `steps` steps (the last one `longer` steps more), one seed."""
    base = ["experiment=tiny", "trainer=cpu", f"train.max_steps={steps}", f"train.val_every={steps}",
            f"train.ckpt_every={ckpt_every or steps}", "train.batch_size=2", "train.seq_len=32",
            "train.val_batches=1", "train.log_every=10", f"data.cache_dir={cache}"]
    lrs = ["3e-4", "1e-3", "2e-3"]
    data = {"name": name, "kind": "ablation", "base": base, "seeds": [0], "max_retries": 1, "max_failures": 0,
            "ablation": {"variants": {f"v{i}": ["attention=transformer", f"optim.lr={lrs[i]}"]
                                      for i in range(variants)}}}
    if longer:
        last = data["ablation"]["variants"][f"v{variants - 1}"]
        last += [f"train.max_steps={steps + longer}", f"train.val_every={steps + longer}"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _profile(tmp_path: Path, timeout_min: int = 10, **env: str) -> Path:
    data = {"name": "ci_slurm", "executor": "slurm", "nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1,
            "cpus_per_task": 1, "mem_gb": 2, "timeout_min": timeout_min,
            "env": {"OMP_NUM_THREADS": "1", **env}}
    path = tmp_path / "ci_slurm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "mta_lab.cli", "sweep", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=180, env=clean_env())
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def _submit(path: Path, sweep_dir: Path, profile: Path, workers: int) -> list[str]:
    out = _cli("submit", str(path), "--dir", str(sweep_dir), "--cluster", str(profile), "--workers", str(workers))
    listed = re.search(r"worker job\(s\): ([\d_, ]+);", " ".join(out.stdout.split()))
    jobs = listed.group(1).replace(" ", "").split(",") if listed else []  # 12_0,12_1 (an array) or 13 (one job)
    assert len(jobs) == workers, out.stdout
    return jobs


def _queued(jobs: list[str]) -> list[str]:
    """Jobs of `jobs` that SLURM still has (pending, running, completing)."""
    arrays = sorted({j.split("_")[0] for j in jobs})
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(arrays)], capture_output=True,
                         text=True, timeout=20)
    return [line for line in out.stdout.splitlines() if line.split()[0] in jobs]


def _state(jobs: list[str], job: str) -> str:
    return next((line.split()[1] for line in _queued(jobs) if line.split()[0] == job), "")


def _trials(spec: SweepSpec, sweep_dir: Path):
    return open_sweep(spec, sweep_dir).study.get_trials(deepcopy=False)


def _runs(sweep) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep.tracking_uri)
    exp = client.get_experiment_by_name(sweep.experiment)
    return client.search_runs([exp.experiment_id])


def _status(path: Path, sweep_dir: Path) -> str:
    return _cli("status", str(path), "--dir", str(sweep_dir)).stdout


def _assert_done_once(spec: SweepSpec, sweep_dir: Path) -> None:
    """Every variant x seed COMPLETE exactly once, nothing RUNNING or WAITING, no MLflow run RUNNING, the
    parent FINISHED."""
    trials = _trials(spec, sweep_dir)
    done = sorted((t.user_attrs["variant"], t.user_attrs["seed"]) for t in trials if t.state == TrialState.COMPLETE)
    assert done == sorted((p.variant, p.seed) for p in spec.fixed_trials()), done
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    sweep = open_sweep(spec, sweep_dir)
    statuses = {r.info.run_id: r.info.status for r in _runs(sweep)}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses[sweep.parent_run_id] == "FINISHED"


def _log(sweep_dir: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(sweep_dir.glob("submitit/**/*_log.*")))


def test_a_sweep_runs_to_the_end_on_slurm_and_a_second_submit_is_refused(tmp_path, data_cache):
    path, sweep_dir = _sweep_file(tmp_path, data_cache, "slurm_ok", steps=20), tmp_path / "sweep"
    spec = SweepSpec.load(path)
    _cli("create", str(path), "--dir", str(sweep_dir))
    jobs = _submit(path, sweep_dir, _profile(tmp_path), workers=2)

    wait_for(lambda: not _queued(jobs), 240, f"jobs {jobs} to end")

    _assert_done_once(spec, sweep_dir)
    again = _cli("submit", str(path), "--dir", str(sweep_dir), "--cluster", str(_profile(tmp_path)),
                 "--workers", "2", check=False)
    assert again.returncode != 0 and "nothing left to run" in again.stdout + again.stderr, again.stdout + again.stderr
    assert len(list(sweep_dir.glob("submitit/.submission_file_*"))) == 1  # nothing more reached sbatch


def _training(spec: SweepSpec, sweep_dir: Path, n: int = 1):
    """The RUNNING trials, once `n` of them train: worker recorded, first step checkpoint written (so the attempt
    has an MLflow run and something to resume from); None before."""
    from mta_lab.train.checkpoints import latest_checkpoint

    running = [t for t in _trials(spec, sweep_dir) if t.state == TrialState.RUNNING and "mta.pid" in t.user_attrs
               and any(latest_checkpoint(d) for d in t.user_attrs.get("mta.run_dirs", ()))]
    return running if len(running) >= n else None


def _run_of(sweep, trial) -> object:
    """The MLflow run of a trial's (single-seed) run directory."""
    run_id = (Path(trial.user_attrs["mta.run_dirs"][-1]) / "mlflow_run_id").read_text().strip()
    return next(r for r in _runs(sweep) if r.info.run_id == run_id)


def _assert_interrupted(spec: SweepSpec, sweep_dir: Path, trial_number: int, why: str) -> None:
    """The attempt `trial_number` was interrupted (not failed) with `why` in its reason, its MLflow run KILLED with
    that reason and a history line, its variant/seed back in the queue."""
    trials = {t.number: t for t in _trials(spec, sweep_dir)}
    cut = trials[trial_number]
    assert cut.state == TrialState.FAIL, (cut.state, _log(sweep_dir))
    assert cut.user_attrs[FAILURE_KIND] == "interrupted" and why in cut.user_attrs[FAILURE], cut.user_attrs
    run = _run_of(open_sweep(spec, sweep_dir), cut)
    assert run.info.status == "KILLED" and why in run.data.tags["mta.failure_reason"], (run.info, run.data.tags)
    assert "KILLED" in run.data.tags["mta.interruptions"], run.data.tags
    assert [t for t in trials.values() if t.system_attrs.get("mta.requeued_from") == trial_number]


def _checkpoint_steps(trial) -> list[int]:
    from mta_lab.train.checkpoints import list_checkpoints

    return [step for step, _ in list_checkpoints(trial.user_attrs["mta.run_dirs"][-1])]


def _assert_trained_once(sweep, run, interrupted_after: int) -> None:
    """The run resumed past step `interrupted_after` (its checkpoint when it was cut): every logged train step
    appears once in its MLflow history, up to the last step (a restart from step 0 would log steps twice)."""
    from mlflow.tracking import MlflowClient

    steps = [m.step for m in MlflowClient(sweep.tracking_uri).get_metric_history(run.info.run_id, "train/loss")]
    assert interrupted_after > 0 and len(steps) == len(set(steps)), steps
    assert max(steps) >= run.data.metrics["final/steps"] - 10, (max(steps), run.data.metrics)  # log_every=10


def test_a_time_limit_mid_trial_requeues_it_and_the_next_job_resumes_it(tmp_path, data_cache):
    """The job's time limit comes mid-trial: submitit's `--signal=USR2@90` reaches the worker, the trial is
    interrupted (not failed), its MLflow run KILLED with the reason, the job ends; a second submit finishes it from
    its newest checkpoint, in the same MLflow run. The limit is lowered (`scontrol update TimeLimit`) once the
    trial trains, so that the signal comes mid-trial however fast this machine is: SLURM sends it at its next
    time-limit check (every 30 s) once 90 s + 30 s or less are left."""
    path = _sweep_file(tmp_path, data_cache, "slurm_time", steps=1500, variants=1, ckpt_every=50)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    _cli("create", str(path), "--dir", str(sweep_dir))
    jobs = _submit(path, sweep_dir, _profile(tmp_path, timeout_min=10), workers=1)
    (trial,) = wait_for(lambda: _training(spec, sweep_dir), 180, "the trial to train")
    elapsed = subprocess.run(["squeue", "-h", "-j", jobs[0], "-o", "%M"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip()  # [H:]M:SS
    minutes = int(elapsed.split(":")[-2]) + 60 * int(elapsed.split(":")[0]) * (elapsed.count(":") == 2)
    subprocess.run(["scontrol", "update", f"JobId={jobs[0]}", f"TimeLimit={minutes + 2}"], check=True, timeout=20)
    wait_for(lambda: not _queued(jobs), 150, f"job {jobs} to stop at its time limit's signal")

    _assert_interrupted(spec, sweep_dir, trial.number, "SIGUSR2")
    assert counts(open_sweep(spec, sweep_dir))["waiting"] == 1
    print(_status(path, sweep_dir))
    done_before = max(_checkpoint_steps(trial))

    more = _submit(path, sweep_dir, _profile(tmp_path, timeout_min=10), workers=1)
    wait_for(lambda: not _queued(more), 300, f"job {more} to finish the trial")

    _assert_done_once(spec, sweep_dir)
    sweep = open_sweep(spec, sweep_dir)
    (run,) = [r for r in _runs(sweep) if r.data.tags.get("mta.role") != "sweep"]  # resumed: the same run
    assert run.info.status == "FINISHED" and "KILLED" in run.data.tags["mta.interruptions"], run.data.tags
    assert "mta.failure_reason" not in run.data.tags  # a finished run drops the failure tags, keeps the history
    _assert_trained_once(sweep, run, done_before)
    n = counts(sweep)
    assert (n["complete"], n["interrupted"], n["failed"]) == (1, 1, 0)
    print(_status(path, sweep_dir))


def test_kill_9_of_a_worker_mid_trial_is_recovered_by_the_other_worker(tmp_path, data_cache):
    path = _sweep_file(tmp_path, data_cache, "slurm_kill", steps=300, variants=2, ckpt_every=50)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    _cli("create", str(path), "--dir", str(sweep_dir))
    profile = _profile(tmp_path, MTA_SWEEP_HEARTBEAT_S="1", MTA_SWEEP_GRACE_S="5")
    jobs = _submit(path, sweep_dir, profile, workers=2)

    victim = wait_for(lambda: _training(spec, sweep_dir, 2), 180, "both workers training")[0]
    os.kill(int(victim.user_attrs["mta.pid"]), signal.SIGKILL)
    wait_for(lambda: not _queued(jobs), 300, f"jobs {jobs} to end")

    _assert_done_once(spec, sweep_dir)
    (dead,) = [t for t in _trials(spec, sweep_dir) if t.state == TrialState.FAIL]
    assert dead.number == victim.number and dead.user_attrs[FAILURE_KIND] == "died", dead.user_attrs
    sweep = open_sweep(spec, sweep_dir)
    statuses = sorted(r.info.status for r in _runs(sweep) if r.data.tags.get("mta.role") != "sweep")
    assert statuses == ["FAILED", "FINISHED", "FINISHED"], statuses
    assert "worker died" in _run_of(sweep, dead).data.tags["mta.failure_reason"]
    print(_status(path, sweep_dir))


def test_scontrol_requeue_mid_trial_resumes_the_trial_in_the_requeued_job(tmp_path, data_cache):
    """`scontrol requeue` of a training worker's job: SLURM sends SIGTERM (SIGKILL after KillWait); the trial is
    interrupted and requeued in the study, its MLflow run KILLED; the job waits in PENDING (requeue hold, released
    here with `scontrol update StartTime=now`), starts again under the same id and resumes the trial from its
    newest checkpoint, in the same MLflow run."""
    path = _sweep_file(tmp_path, data_cache, "slurm_requeue", steps=600, variants=1, ckpt_every=50)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    _cli("create", str(path), "--dir", str(sweep_dir))
    jobs = _submit(path, sweep_dir, _profile(tmp_path), workers=1)
    (trial,) = wait_for(lambda: _training(spec, sweep_dir), 180, "the trial to train")

    subprocess.run(["scontrol", "requeue", jobs[0]], check=True, timeout=20)
    wait_for(lambda: _state(jobs, jobs[0]) == "PENDING", 60, f"job {jobs[0]} to be requeued (PENDING)")
    wait_for(lambda: next(t for t in _trials(spec, sweep_dir) if t.number == trial.number).state != TrialState.RUNNING,
             30, f"trial {trial.number} to stop")
    _assert_interrupted(spec, sweep_dir, trial.number, "SIGTERM")
    print(subprocess.run(["squeue", "-j", jobs[0].split("_")[0], "-o", "%.10i %.9T %.20r"], capture_output=True,
                         text=True, timeout=20).stdout)
    done_before = max(_checkpoint_steps(trial))
    subprocess.run(["scontrol", "update", f"JobId={jobs[0]}", "StartTime=now"], check=True, timeout=20)
    wait_for(lambda: not _queued(jobs), 300, f"the requeued job {jobs[0]} to finish the trial")

    _assert_done_once(spec, sweep_dir)
    sweep = open_sweep(spec, sweep_dir)
    (run,) = [r for r in _runs(sweep) if r.data.tags.get("mta.role") != "sweep"]
    assert run.info.status == "FINISHED" and "KILLED" in run.data.tags["mta.interruptions"], run.data.tags
    _assert_trained_once(sweep, run, done_before)
    assert _log(sweep_dir).count("Starting with JobEnvironment") == 2  # the same job ran twice
    n = counts(sweep)
    assert (n["complete"], n["interrupted"], n["failed"]) == (1, 1, 0)


def test_usr2_preemption_mid_trial_is_requeued_and_resumed_by_the_other_worker(tmp_path, data_cache):
    """`scancel -s USR2 <job>` (what reaches the worker: the signal goes to the job's srun step, where submitit
    runs Python; `--batch` would signal only the batch shell, which dies, and the step gets SIGTERM) of one of two
    training workers: its trial is interrupted, its MLflow run KILLED with the reason, the job ends; the other
    worker, once its own (longer) trial is done, takes the requeued trial and resumes it from its checkpoint."""
    path = _sweep_file(tmp_path, data_cache, "slurm_usr2", steps=400, variants=2, ckpt_every=50, longer=300)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    _cli("create", str(path), "--dir", str(sweep_dir))
    jobs = _submit(path, sweep_dir, _profile(tmp_path), workers=2)
    running = wait_for(lambda: _training(spec, sweep_dir, 2), 180, "both workers training")
    (victim,) = [t for t in running if t.user_attrs["variant"] == "v0"]  # the shorter trial
    name = Path(victim.user_attrs["mta.run_dirs"][-1]).name
    (job,) = [j for j in jobs if f"training {name}" in "".join(
        p.read_text() for p in (sweep_dir / "submitit" / j).glob("*_log.out"))]

    subprocess.run(["scancel", "-s", "USR2", job], check=True, timeout=20)
    wait_for(lambda: job not in [line.split()[0] for line in _queued(jobs)], 60, f"job {job} to end")
    _assert_interrupted(spec, sweep_dir, victim.number, "SIGUSR2")
    print(_status(path, sweep_dir))
    done_before = max(_checkpoint_steps(victim))
    wait_for(lambda: not _queued(jobs), 300, f"jobs {jobs} to end")

    _assert_done_once(spec, sweep_dir)
    sweep = open_sweep(spec, sweep_dir)
    resumed = _run_of(sweep, victim)
    assert resumed.info.status == "FINISHED" and "KILLED" in resumed.data.tags["mta.interruptions"]
    _assert_trained_once(sweep, resumed, done_before)
    assert len([r for r in _runs(sweep) if r.data.tags.get("mta.role") != "sweep"]) == 2
    n = counts(sweep)
    assert (n["complete"], n["interrupted"], n["failed"]) == (2, 1, 0)


def test_scancel_in_the_first_seconds_leaves_no_trial_running(tmp_path, data_cache):
    """submitit's SIGTERM handler only logs 'Bypassing signal SIGTERM': the worker's own handler is installed
    first thing in the job, so a scancel right after submitit started stops the worker before it claims a trial
    (without it the worker claimed one and was SIGKILLed at KillWait with the trial RUNNING)."""
    path = _sweep_file(tmp_path, data_cache, "slurm_cancel", steps=300, variants=1)
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    _cli("create", str(path), "--dir", str(sweep_dir))
    jobs = _submit(path, sweep_dir, _profile(tmp_path), workers=1)

    wait_for(lambda: "Starting with JobEnvironment" in _log(sweep_dir), 120, "submitit to start in the job", 0.05)
    subprocess.run(["scancel", jobs[0]], check=True, timeout=20)
    wait_for(lambda: not _queued(jobs), 120, f"job {jobs} to end")

    trials = _trials(spec, sweep_dir)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], _log(sweep_dir)
    assert [t.state for t in trials if t.state != TrialState.FAIL] == [TrialState.WAITING]
    assert all(t.user_attrs.get(FAILURE_KIND) == "interrupted" for t in trials if t.state == TrialState.FAIL)
