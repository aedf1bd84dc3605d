"""MLflow runs for training: create or resume, tag, log params/artifacts, close with a status.

Always an explicit tracking URI (design.md): sqlite:///<run root>/mlflow.db locally, a server URL on a cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from mta_lab.critical import GuardedClient
from mta_lab.errors import TrackingError
from mta_lab.tracking.database import initialise_sqlite
from mta_lab.tracking.experiments import get_or_create_experiment

MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch call


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when a tracking server does not answer; a local sqlite database is made
    ready to write (created and migrated once)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                pass
        except OSError as err:
            raise TrackingError(
                f"tracking.uri={uri}: no MLflow server answers at {parsed.hostname}:{port} ({err}); start one "
                f"(`mlflow server --backend-store-uri sqlite:///mlflow.db --port {port}`) or drop tracking.uri "
                "to log to a local sqlite file"
            ) from None
    elif parsed.scheme == "sqlite":
        initialise_sqlite(uri)  # creates the folder and the database once, safely under concurrent starts


def default_artifact_location(uri: str) -> str | None:
    """`<db dir>/mlartifacts` for a sqlite URI; None (the server's choice) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(os.path.dirname(uri.removeprefix("sqlite:///")), "mlartifacts").resolve().as_uri()


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunHandle:
    """One MLflow run, created or resumed; metrics are written at once. After a resume, a point of a metric at or
    below that metric's last logged step (`resume_floor[key]`, logged before the interruption) is dropped: a replayed
    step is not logged twice, and a validation cut short by the kill (its metrics never logged) is logged when it
    runs again."""

    def __init__(self, uri: str, experiment: str, *, run_id: str | None = None, run_name: str | None = None,
                 tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> None:
        """`experiment` is created when missing, marked as model training (`tracking.experiments`); with a sqlite
        URI its artifacts go to `mlartifacts/` beside the database (MLflow's default: ./mlruns in the current
        directory)."""
        self.uri = uri
        self.client = GuardedClient(MlflowClient(tracking_uri=uri))  # a signal never cuts a write in half
        if run_id is not None:
            run = self.client.get_run(run_id)
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.resume_floor = self._last_logged_steps()
        else:
            experiment_id = get_or_create_experiment(self.client, experiment, default_artifact_location(uri))
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
            self.run_id = run.info.run_id
            self.resume_floor: dict[str, int] = {}
        self.experiment_id = run.info.experiment_id

    def _last_logged_steps(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        return {key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
                for key in run.data.metrics}

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_ms: int, *, force: bool = False) -> None:
        """Log at `step`; a metric whose history already reaches `step` (logged before an interruption) is
        skipped, unless `force`."""
        if not force:
            metrics = {k: v for k, v in metrics.items() if step > self.resume_floor.get(k, -1)}
        # Written at once, so a killed run loses nothing it logged (a resume relies on it).
        points = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
        for i in range(0, len(points), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=points[i:i + MAX_BATCH])

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[i:i + 90])

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path)

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if reason:
            self.client.set_tag(self.run_id, "mta.failure_reason", reason[:5000])
        self.client.set_terminated(self.run_id, status=status)
