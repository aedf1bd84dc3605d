"""The sweep engine end to end: real Optuna journal storage, real MLflow sqlite, real tiny trainings.

Every training is the tiny model for a few steps of 2 x 32 tokens on CPU, so the file runs in a few minutes on
2 cores. Workers run in-process (run_worker) where the test needs no process boundary, and as `mta-lab sweep`
subprocesses where it does (concurrency, SIGKILL, Ctrl-C).
"""

from __future__ import annotations

import os
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
from mta_lab.sweep.study import create, open_sweep

NAN = ["optim.lr=1e30", "optim.warmup_steps=0", "optim.grad_clip=null"]  # a NaN loss at step 2, every time


def tiny_base(cache: Path, steps: int = 3, val_every: int | None = None) -> list[str]:
    return ["experiment=tiny", "trainer=cpu", f"train.max_steps={steps}",
            f"train.val_every={val_every or steps}", f"train.ckpt_every={steps}", "train.batch_size=2",
            "train.seq_len=32", "train.val_batches=1", "train.log_every=1", f"data.cache_dir={cache}"]


def write_sweep(tmp_path: Path, name: str, cache: Path, *, steps: int = 3, **fields) -> Path:
    data = {"name": name, "kind": "ablation", "base": tiny_base(cache, steps), "seeds": [0], **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_cli(*args: str, **kw) -> subprocess.Popen:
    env = clean_env(OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "mta_lab.cli", "sweep", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def mlflow_runs(sweep, role: str = "trial") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep.tracking_uri)
    exp = client.get_experiment_by_name(sweep.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    if role == "sweep":
        return [r for r in runs if r.data.tags.get("mta.role") == "sweep"]
    return [r for r in runs if r.data.tags.get("mta.role") != "sweep"]


@pytest.fixture(scope="module")
def cache(data_cache) -> Path:
    """The packed corpus, built once before any worker runs (so concurrent workers only read it)."""
    from mta_lab.conf import load_run_config
    from mta_lab.data import build_data

    build_data(load_run_config(tiny_base(data_cache)).data, seq_len=32)
    return data_cache


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _run_id_written(run_dir: Path) -> bool:
    path = run_dir / "mlflow_run_id"
    return path.exists() and bool(path.read_text().strip())  # the file is created before the id is written


def running_with_run(sweep_dir: Path, spec: SweepSpec, n: int = 1):
    """The RUNNING trials whose MLflow run exists already (training has started), once there are `n`."""
    from mta_lab.sweep.study import SweepNotCreated

    try:
        study = open_sweep(spec, sweep_dir).study
    except SweepNotCreated:  # `run` has not created it yet
        return None
    running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.user_attrs.get("mta.run_dirs")
               and _run_id_written(Path(t.user_attrs["mta.run_dirs"][-1]))]
    return running if len(running) >= n else None


# ---------------------------------------------------------------------------------------------------- create
def test_create_is_idempotent_also_concurrently(tmp_path, cache):
    path = write_sweep(tmp_path, "idem", cache, seeds=[0, 1, 2],
                       ablation={"variants": {"a": ["attention=transformer"], "b": ["attention=t5_all_gate"]}})
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    procs = [sweep_cli("create", str(path), "--dir", str(sweep_dir)) for _ in range(2)]
    for proc in procs:
        code, out = finish(proc, 120)
        assert code == 0, out
    sweep = create(spec, sweep_dir)  # and a third time, in-process
    trials = sweep.study.get_trials()
    assert sorted((t.user_attrs["variant"], t.user_attrs["seed"]) for t in trials) == \
        [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
    assert all(t.state == TrialState.WAITING for t in trials)
    parents = mlflow_runs(sweep, "sweep")
    assert [p.info.run_id for p in parents] == [sweep.parent_run_id]
    assert parents[0].data.tags["mta.sweep"] == "idem" and parents[0].data.tags["mta.kind"] == "ablation"
    attrs = sweep.study.user_attrs
    assert attrs["mta.spec"]["name"] == "idem" and attrs["mta.spec"]["seeds"] == [0, 1, 2]
    assert attrs["mta.base_config"]["train"]["max_steps"] == 3 and attrs["mta.git_sha"]


def test_status_of_a_sweep_never_created_is_a_clear_error(tmp_path, cache):
    path = write_sweep(tmp_path, "nothing", cache, ablation={"variants": {"a": ["attention=transformer"]}})
    code, out = finish(sweep_cli("status", str(path), "--dir", str(tmp_path / "none")), 60)
    assert code == 2
    assert "error: sweep nothing: no study in" in out and "sweep create" in out and "Traceback" not in out


# ---------------------------------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_diverging_and_raising_trials_fail_with_reason_then_max_failures_stops(tmp_path, cache):
    from mta_lab.sweep.worker import SweepFailed, run_worker

    # "bad" composes (create checks every variant) but its 21-byte corpus fails when the training builds its data
    (tmp_path / "tiny.txt").write_text("To be or not to be. \n")
    bad = ["data=files", f"data.domains={{d: [{tmp_path}/tiny.txt]}}"]
    path = write_sweep(tmp_path, "fails", cache, max_failures=1, ablation={"variants": {
        "nan": NAN, "ok": ["attention=transformer"], "bad": bad}})
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    with pytest.raises(SweepFailed) as err:
        run_worker(spec, sweep_dir=sweep_dir)
    message = str(err.value)
    assert "sweep fails stopped: 2 trials failed, more than max_failures=1" in message
    assert "trial 0 (nan): TrainingDiverged: loss is nan" in message and "trial 2 (bad):" in message
    sweep = open_sweep(spec, sweep_dir)
    by_variant = {t.user_attrs["variant"]: t for t in sweep.study.get_trials()}
    assert by_variant["nan"].state == TrialState.FAIL
    assert by_variant["nan"].user_attrs["mta.failure_kind"] == "diverged"
    assert by_variant["ok"].state == TrialState.COMPLETE  # the sweep went on after the first failure
    assert by_variant["bad"].state == TrialState.FAIL and by_variant["bad"].user_attrs["mta.failure_kind"] == "error"
    runs = {r.data.tags["mta.variant"]: r for r in mlflow_runs(sweep)}
    assert runs["nan"].info.status == "FAILED" and "loss is nan" in runs["nan"].data.tags["mta.failure_reason"]
    assert runs["ok"].info.status == "FINISHED"
    assert [p.info.status for p in mlflow_runs(sweep, "sweep")] == ["FAILED"]
    # the CLI: one clear message, exit 1, no traceback
    code, out = finish(sweep_cli("worker", str(path), "--dir", str(sweep_dir)), 120)
    assert code == 1 and "more than max_failures=1" in out and "Traceback" not in out


# ---------------------------------------------------------------------------------------------------- HPO
def test_hpo_with_pruner_and_best(tmp_path, cache):
    from mta_lab.sweep.status import best
    from mta_lab.sweep.worker import run_worker

    data = {"name": "hpo", "kind": "hpo", "base": tiny_base(cache, steps=4, val_every=2), "seeds": [0],
            "hpo": {"space": {"optim.lr": "tag(log, interval(1e-4, 1e-1))"}, "n_trials": 4,
                    "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 2}},
                    "pruner": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}}}}
    path = tmp_path / "hpo.yaml"
    path.write_text(yaml.safe_dump(data))
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    summary = run_worker(spec, sweep_dir=sweep_dir)
    assert summary.ran == 4 and summary.stopped == "no trials left"
    sweep = open_sweep(spec, sweep_dir)
    trials = sweep.study.get_trials()
    assert len(trials) == 4 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(1e-4 <= t.params["optim.lr"] <= 1e-1 for t in trials)
    assert all(sorted(t.intermediate_values) for t in trials)  # val/loss reported at each validation
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    top = min(done, key=lambda t: t.value)
    assert best(sweep) == {"trial": top.number, "value": top.value, "params": top.params,
                           "metric": "final/val_loss"}
    runs = mlflow_runs(sweep)
    assert len(runs) == 4
    for run in runs:
        trial = trials[int(run.data.tags["mta.trial"])]
        assert float(run.data.params["optim.lr"]) == pytest.approx(trial.params["optim.lr"])
        assert run.data.tags["mlflow.parentRunId"] == sweep.parent_run_id
        assert run.info.status == ("FINISHED" if trial.state == TrialState.COMPLETE else "KILLED")
    code, out = finish(sweep_cli("best", str(path), "--dir", str(sweep_dir)), 60)
    assert code == 0 and f'"trial": {top.number}' in out
    # a finished study: another worker has nothing to do
    assert run_worker(spec, sweep_dir=sweep_dir).ran == 0


# ---------------------------------------------------------------------------------------------------- concurrency
@pytest.mark.slow
def test_three_workers_complete_twelve_trials_none_lost_none_twice(tmp_path, cache):
    variants = {f"v{i}": ["attention=transformer", f"optim.lr={1e-3 * (i + 1):g}"] for i in range(6)}
    path = write_sweep(tmp_path, "conc", cache, seeds=[0, 1], ablation={"variants": variants})
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    code, out = finish(sweep_cli("run", str(path), "--dir", str(sweep_dir), "--workers", "3"), 400)
    assert code == 0, out
    sweep = open_sweep(spec, sweep_dir)
    trials = sweep.study.get_trials()
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({(t.user_attrs["variant"], t.user_attrs["seed"]) for t in trials}) == 12
    assert len({t.user_attrs["mta.pid"] for t in trials}) > 1  # the work was shared
    runs = mlflow_runs(sweep)
    assert len(runs) == 12 and all(r.info.status == "FINISHED" for r in runs)
    assert len({(r.data.tags["mta.variant"], r.data.tags["mta.seed"]) for r in runs}) == 12
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {sweep.parent_run_id}
    assert {r.data.tags["mta.sweep"] for r in runs} == {"conc"}
    assert [p.info.status for p in mlflow_runs(sweep, "sweep")] == ["FINISHED"]
    assert sorted(int(r.data.tags["mta.trial"]) for r in runs) == list(range(12))
    assert "complete" in out and "v5" in out  # the status table printed at the end
    code, out = finish(sweep_cli("status", str(path), "--dir", str(sweep_dir)), 60)
    assert code == 0 and "v5" in out and "2/2" in out and "best so far: v" in out, out


# ---------------------------------------------------------------------------------------------------- SIGKILL
@pytest.mark.slow
def test_sigkilled_worker_is_reaped_retried_and_mlflow_shows_failed(tmp_path, cache):
    from mta_lab.sweep.status import reap
    from mta_lab.sweep.worker import run_worker

    path = write_sweep(tmp_path, "kill", cache, steps=300, max_retries=1,
                       ablation={"variants": {"long": ["attention=transformer"]}})
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    create(spec, sweep_dir)
    worker = sweep_cli("worker", str(path), "--dir", str(sweep_dir))
    try:
        wait_for(lambda: running_with_run(sweep_dir, spec), 120, "the worker to start training")
        time.sleep(0.5)
    finally:
        worker.kill()
        worker.communicate()
    sweep = open_sweep(spec, sweep_dir)
    assert [t.state for t in sweep.study.get_trials()] == [TrialState.RUNNING]  # nobody told optuna
    code, out = finish(sweep_cli("reap", str(path), "--dir", str(sweep_dir)), 60)
    assert code == 0 and "reaped 1 trial(s): 0" in out, out
    assert reap(sweep) == []  # idempotent
    dead, retry = sweep.study.get_trials()
    assert dead.state == TrialState.FAIL and "worker died" in dead.user_attrs["mta.failure"]
    assert retry.state == TrialState.WAITING and retry.user_attrs == {"variant": "long", "seed": 0,
                                                                     "overrides": ["attention=transformer"]}
    assert run_worker(spec, sweep_dir=sweep_dir).completed == [1]
    runs = {r.data.tags["mta.trial"]: r for r in mlflow_runs(sweep)}
    assert runs["0"].info.status == "FAILED" and "worker died" in runs["0"].data.tags["mta.failure_reason"]
    assert runs["1"].info.status == "FINISHED"
    assert runs["1"].data.tags["mta.retried_from"] == "0" and runs["1"].data.tags["mta.attempt"] == "2"
    assert runs["1"].info.run_name == "kill-long-s0-t1" != runs["0"].info.run_name
    assert [t.state for t in sweep.study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]


# ---------------------------------------------------------------------------------------------------- Ctrl-C
@pytest.mark.slow
def test_ctrl_c_on_run_stops_workers_cleanly_and_rerun_completes(tmp_path, cache):
    variants = {"a": ["attention=transformer"], "b": ["attention=t5_all_gate"]}
    path = write_sweep(tmp_path, "ctrlc", cache, steps=300, seeds=[0, 1], ablation={"variants": variants})
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    run = sweep_cli("run", str(path), "--dir", str(sweep_dir), "--workers", "2", start_new_session=True)
    try:
        wait_for(lambda: running_with_run(sweep_dir, spec, 2), 180, "two workers training")
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        code, out = finish(run, 120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert code == 130, out
    assert "interrupted; run the same command again" in out and "Traceback" not in out
    sweep = open_sweep(spec, sweep_dir)
    trials = sweep.study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 2 and all(t.user_attrs["mta.failure_kind"] == "interrupted" for t in stopped)
    assert sum(t.state == TrialState.WAITING for t in trials) == 4  # 2 never started + 2 requeued
    assert {r.info.status for r in mlflow_runs(sweep)} == {"KILLED"}
    # rerunning the same file continues the same study (a changed file would be refused: test_sweep_changes.py)
    code, out = finish(sweep_cli("run", str(path), "--dir", str(sweep_dir), "--workers", "2"), 400)
    assert code == 0, out
    trials = open_sweep(spec, sweep_dir).study.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted((t.user_attrs["variant"], t.user_attrs["seed"]) for t in done) == \
        [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    statuses = sorted(r.info.status for r in mlflow_runs(sweep))
    assert statuses == ["FINISHED"] * 4 + ["KILLED"] * 2
