"""Eval results into MLflow: the checkpoint's own training run, or a new run linked to it by tag.

The training run is found from the run directory of the checkpoint (`<run dir>`, `<run dir>/final/model.pt` or
`<run dir>/checkpoints/*.ckpt`): its `mlflow_run_id` file and its `config.yaml` (tracking.uri, or the default
sqlite:///<root>/mlflow.db beside the run directory). `track=auto` logs into that run when there is one (its
status is left as it is),
`track=new` creates a run tagged `mta.eval_of=<training run id>` (or the checkpoint path) and `mta.role=eval`,
`track=false` records nothing. Everything is logged after the whole eval finished, so a failed or killed eval
records nothing and leaves no run RUNNING. Metrics are logged at the checkpoint's step; each task adds
`eval/<task>.json` and `eval/<task>.csv` artifacts.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mta_lab.eval.errors import EvalError
from mta_lab.eval.results import EvalResult

TRACK = ("auto", "new", "false")


@dataclass(frozen=True)
class Target:
    uri: str | None
    run_id: str | None  # the training run; None when the checkpoint has none
    experiment: str
    run_dir: Path | None


def run_dir_of(ckpt: str) -> Path | None:
    path = Path(ckpt).expanduser().resolve()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "mlflow_run_id").is_file() or (candidate / "config.yaml").is_file():
            return candidate
    return None


def find_target(ckpt: str, uri: str | None = None) -> Target:
    run_dir = run_dir_of(ckpt)
    run_id, experiment, found_uri = None, "mta-lab", None
    if run_dir is not None:
        if (run_dir / "mlflow_run_id").is_file():
            run_id = (run_dir / "mlflow_run_id").read_text().strip() or None
        config_file = run_dir / "config.yaml"
        if config_file.is_file():
            try:
                config = yaml.safe_load(config_file.read_text()) or {}
            except yaml.YAMLError:
                config = {}
            tracking = config.get("tracking") or {}
            experiment = tracking.get("experiment") or experiment
            found_uri = tracking.get("uri")
        if found_uri is None and (run_dir.parent / "mlflow.db").is_file():  # the default: <root>/mlflow.db
            found_uri = f"sqlite:///{run_dir.parent.resolve()}/mlflow.db"
    return Target(uri or found_uri, run_id, experiment, run_dir)


def check_target(target: Target, track: str, ckpt: str) -> None:
    """Before any eval work: the run to log into exists (track=auto without a run records nothing)."""
    if track == "false" or (track == "auto" and target.run_id is None):
        return
    if target.uri is None:
        raise EvalError(f"track={track}: ckpt={ckpt} has no run directory with a tracking URI; give tracking_uri= "
                        "(e.g. sqlite:///$PWD/runs/mlflow.db) or track=false")
    from mta_lab.tracking.mlflow_run import check_reachable

    check_reachable(target.uri)
    if target.run_id is not None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            MlflowClient(target.uri).get_run(target.run_id)
        except MlflowException:
            raise EvalError(f"ckpt={ckpt}: its training run {target.run_id} is not in {target.uri}; give the "
                            "right tracking_uri=, track=new, or track=false") from None


def _csv(result: EvalResult, path: Path) -> None:
    keys = list(dict.fromkeys(k for row in result.settings for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(result.settings)


def _log(client, run_id: str, result: EvalResult, step: int) -> None:
    from mlflow.entities import Metric

    from mta_lab.tracking.mlflow_run import MAX_BATCH

    now = int(time.time() * 1000)
    points = [Metric(k, v, now, step) for k, v in result.metrics().items()]
    for i in range(0, len(points), MAX_BATCH):
        client.log_batch(run_id, metrics=points[i:i + MAX_BATCH])
    with tempfile.TemporaryDirectory() as tmp:
        json_path, csv_path = Path(tmp, f"{result.task}.json"), Path(tmp, f"{result.task}.csv")
        json_path.write_text(json.dumps(result.to_dict(), indent=1, default=str))
        _csv(result, csv_path)
        client.log_artifact(run_id, str(json_path), "eval")
        client.log_artifact(run_id, str(csv_path), "eval")


def record(results: list[EvalResult], target: Target, track: str, *, ckpt: str, step: int | None) -> str | None:
    """Log every result; the MLflow run id used (None when nothing was recorded)."""
    if track == "false" or (track == "auto" and target.run_id is None):
        return None
    from mlflow.tracking import MlflowClient

    from mta_lab.tracking.mlflow_run import RunHandle

    if track == "auto":  # the training run, left in its status
        client = MlflowClient(target.uri)
        for result in results:
            _log(client, target.run_id, result, step or 0)
        return target.run_id
    tags = {"mta.role": "eval", "mta.eval_of": target.run_id or str(Path(ckpt).resolve()),
            "mta.eval_tasks": ",".join(r.task for r in results)}
    if target.run_id is not None:  # what reports group by
        train_tags = MlflowClient(target.uri).get_run(target.run_id).data.tags
        tags |= {k: v for k, v in train_tags.items() if k in ("mta.variant", "mta.size", "mta.seed", "mta.sweep")}
    handle = RunHandle(target.uri, target.experiment, run_name=f"eval-{'-'.join(r.task for r in results)}",
                       tags=tags)
    try:
        for result in results:
            _log(handle.client, handle.run_id, result, step or 0)
    except BaseException:
        handle.finish("FAILED", "the eval's results could not all be logged")
        raise
    handle.finish("FINISHED")
    return handle.run_id
