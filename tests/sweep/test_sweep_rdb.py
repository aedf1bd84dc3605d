"""The SQLAlchemy storage path (here an SQLite file; PostgreSQL is tested elsewhere against a real server):
workers record heartbeats while they train, a trial whose heartbeat went stale is failed and retried by the next
worker, and its MLflow run ends FAILED, not RUNNING."""

from __future__ import annotations

import sqlite3
import time

import yaml
from optuna.trial import TrialState
from test_sweep_engine import cache, tiny_base  # noqa: F401 - the module fixture `cache`

from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.study import create, open_sweep
from mta_lab.sweep.worker import _pop_waiting, run_worker


def test_stale_heartbeat_is_failed_retried_and_closed_in_mlflow(tmp_path, cache, monkeypatch):  # noqa: F811
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MTA_SWEEP_HEARTBEAT_S", "1")
    monkeypatch.setenv("MTA_SWEEP_GRACE_S", "2")
    db = tmp_path / "optuna.db"
    path = tmp_path / "rdb.yaml"
    path.write_text(yaml.safe_dump({"name": "rdb", "kind": "ablation", "base": tiny_base(cache), "seeds": [0],
                                    "storage": f"sqlite:///{db}", "max_retries": 1,
                                    "ablation": {"variants": {"a": ["attention=transformer"]}}}))
    spec, sweep_dir = SweepSpec.load(path), tmp_path / "sweep"
    sweep = create(spec, sweep_dir)
    assert not (sweep_dir / "optuna.journal").exists()

    # a worker that took trial 0, started its MLflow run, beat once and died
    trial = _pop_waiting(sweep.study)
    sweep.study._storage.record_heartbeat(trial._trial_id)
    client = MlflowClient(sweep.tracking_uri)
    dead = client.create_run(client.get_experiment_by_name(sweep.experiment).experiment_id, run_name="dead")
    run_dir = sweep_dir / "runs" / "dead"
    run_dir.mkdir(parents=True)
    (run_dir / "mlflow_run_id").write_text(dead.info.run_id)
    trial.set_user_attr("mta.run_dirs", [str(run_dir)])
    time.sleep(3)

    summary = run_worker(spec, sweep_dir=sweep_dir)
    assert summary.completed == [1]
    first, retry = open_sweep(spec, sweep_dir).study.get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.user_attrs["variant"] == "a"
    assert client.get_run(dead.info.run_id).info.status == "FAILED"
    assert "heartbeat" in client.get_run(dead.info.run_id).data.tags["mta.failure_reason"]
    run_id = (sweep_dir / "runs" / "rdb-a-s0-t1" / "mlflow_run_id").read_text()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mta.retried_from"] == "0"
    with sqlite3.connect(db) as con:  # the worker beat for the trial it ran
        beats = dict(con.execute("select trial_id, count(*) from trial_heartbeats group by trial_id").fetchall())
    assert retry._trial_id in beats
