"""Runs from MLflow (never from files): one row per training run, with its tags, params, metrics and status.

Columns follow `mlflow.search_runs`: `tags.<k>`, `params.<k>`, `metrics.<k>`, plus `run_id`, `run_name`,
`status`, `start_time` and the convenience columns `variant`, `seed`, `size`, `sweep`, `trial`, `attention`.
Sweep parent runs (tag mta.role=sweep) are not training runs and are left out. An eval run written beside its
checkpoint's run (`mta-lab eval ... track=new`: tags mta.role=eval, mta.eval_of=<training run id>) is not a row of
its own: its metrics join its training run's row (column `eval_runs` lists the eval runs merged into a row), so
`eval/*` metrics sit beside the training run's `final/*` whichever way they were logged. Where a metric is in both,
the value logged last wins; an eval run not FINISHED (still logging, or failed) is left out. An eval run whose
checkpoint has no training run in the experiment (mta.eval_of is a checkpoint path) is a row of its own; one whose
training run is in the experiment but not selected is left out.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from mta_lab.report.errors import ReportError

FINISHED = "FINISHED"


@dataclass(frozen=True)
class RunQuery:
    """Which runs a report is made of: an experiment, optionally a sweep, exact tag values and run ids."""

    uri: str
    experiment: str = "mta-lab"
    sweep: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_ids: tuple[str, ...] = ()

    def filter_string(self) -> str:
        tags = {**({"mta.sweep": self.sweep} if self.sweep else {}), **self.tags}
        return " and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in tags.items())

    def describe(self) -> str:
        parts = [f"experiment {self.experiment!r}"]
        if self.sweep:
            parts.append(f"sweep {self.sweep!r}")
        parts += [f"{k}={v}" for k, v in self.tags.items()]
        if self.run_ids:
            parts.append(f"runs {', '.join(self.run_ids)}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["run_ids"] = list(self.run_ids)
        return d


def _quote(value: str) -> str:
    return str(value).replace("'", "\\'")


_NOTHING = ("a report only reads runs and creates nothing; check the path, or give the run root with --root "
            "(its mlflow.db is read)")


def check_store_exists(uri: str) -> None:
    """A local tracking store (an sqlite file, a file:/plain-path folder) must exist and be MLflow's: MLflow's
    client would create an empty one (or add its tables to another program's database). Servers are not checked."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        if not database or database == ":memory:":
            raise ReportError(f"--uri {uri}: an in-memory database holds no runs; {_NOTHING}")
        path = Path(database).resolve()
        if not path.is_file():
            raise ReportError(f"--uri {uri}: no MLflow tracking store at {path}; {_NOTHING}")
        try:
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise ReportError(f"--uri {uri}: {path} is not an sqlite database ({err}); {_NOTHING}") from None
        if not {"experiments", "runs"} <= tables:
            raise ReportError(f"--uri {uri}: {path} is not an MLflow tracking database (no experiments/runs tables); "
                              f"{_NOTHING}")
    elif scheme in ("", "file"):
        path = Path(urlparse(uri).path if scheme == "file" else uri).resolve()
        if not path.is_dir():
            raise ReportError(f"--uri {uri}: no MLflow tracking store at {path}; {_NOTHING}")


def client_for(uri: str):
    """A client of an existing tracking store (never creates one)."""
    from mlflow.tracking import MlflowClient

    check_store_exists(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        listed = ", ".join(repr(n) for n in names) if names else "none"
        raise ReportError(f"experiment {name!r} does not exist in this tracking store; existing experiments: {listed} "
                          "(choose one with --experiment)")
    return exp.experiment_id


def collect_runs(query: RunQuery, *, client=None) -> pd.DataFrame:
    """All matching training runs, every status (failed and killed runs count as failed seeds)."""
    client = client or client_for(query.uri)
    exp_id = experiment_id(client, query.experiment)
    runs = client.search_runs([exp_id], filter_string=query.filter_string(), max_results=50000)
    rows = [_row(run) for run in runs if run.data.tags.get("mta.role") not in ("sweep", "eval")]
    rows += _merge_eval_runs(client, exp_id, rows, [r for r in runs if r.data.tags.get("mta.role") == "eval"])
    if query.run_ids:
        wanted = set(query.run_ids)
        rows = [r for r in rows if r["run_id"] in wanted or any(r["run_id"].startswith(w) for w in wanted)]
    if not rows:
        raise ReportError(_no_runs_message(client, exp_id, query))
    df = pd.DataFrame(rows)
    return df.sort_values(["variant", "seed_order", "start_time"], kind="stable").reset_index(drop=True)


EVAL_ROLE_FILTER = "tags.`mta.role` = 'eval'"


def _merge_eval_runs(client, exp_id: str, rows: list[dict], selected_evals: list) -> list[dict]:
    """Fold the experiment's eval runs into the rows of their training runs (in place); the rows of eval runs
    whose checkpoint has no training run in the experiment, when the query selected them."""
    by_id = {row["run_id"]: row for row in rows}
    for row in rows:
        row["eval_runs"] = ""
    evals = client.search_runs([exp_id], filter_string=EVAL_ROLE_FILTER, max_results=50000)
    orphans = []
    for run in sorted(evals, key=lambda r: r.info.start_time or 0):
        if run.info.status != FINISHED:  # still logging, or its logging failed: its metrics may be partial
            continue
        parent = run.data.tags.get("mta.eval_of", "")
        row = by_id.get(parent)
        if row is None:
            if any(r.info.run_id == run.info.run_id for r in selected_evals) and not _is_run(client, parent, exp_id):
                orphans.append(_row(run) | {"eval_runs": run.info.run_id})
            continue
        for key, value in run.data.metrics.items():
            column = f"metrics.{key}"
            if column in row and not _logged_later(client, run.info.run_id, row, key):
                continue
            row[column] = value
            row.setdefault("_metric_source", {})[key] = run.info.run_id
        row["eval_runs"] = ",".join(filter(None, [row["eval_runs"], run.info.run_id]))
    for row in rows:
        row.pop("_metric_source", None)
    return orphans


def eval_runs_note(runs: pd.DataFrame) -> str | None:
    """A report note naming the eval runs merged into training runs' rows (None when there were none)."""
    if "eval_runs" not in runs:
        return None
    merged = {r: name for ids, name in zip(runs["eval_runs"], runs["run_name"], strict=True)
              for r in str(ids or "").split(",") if r}
    merged = {r: n for r, n in merged.items() if r not in set(runs["run_id"])}
    if not merged:
        return None
    names = sorted({str(n) for n in merged.values()})
    return (f"{len(merged)} eval run(s) (mta.role=eval, linked by mta.eval_of) merged into their checkpoints' rows: "
            f"{', '.join(names)}.")


def _latest_timestamp(client, run_id: str, key: str) -> int:
    return max((m.timestamp for m in client.get_metric_history(run_id, key)), default=0)


def _logged_later(client, eval_run_id: str, row: dict, key: str) -> bool:
    """The eval run's `key` was logged after the value the row holds (its own, or an earlier eval run's)."""
    holder = row.get("_metric_source", {}).get(key, row["run_id"])
    return _latest_timestamp(client, eval_run_id, key) >= _latest_timestamp(client, holder, key)


def _is_run(client, run_id: str, exp_id: str) -> bool:
    """`run_id` names a run of the experiment (not a checkpoint path, not a run elsewhere)."""
    from mlflow.exceptions import MlflowException

    if not run_id or "/" in run_id:
        return False
    try:
        return client.get_run(run_id).info.experiment_id == exp_id
    except MlflowException:
        return False


def _no_runs_message(client, exp_id: str, query: RunQuery) -> str:
    if not query.sweep:
        return f"no training runs match {query.describe()}"
    runs = client.search_runs([exp_id], max_results=50000)
    trained = sorted({r.data.tags.get("mta.sweep", "none") for r in runs if r.data.tags.get("mta.role") != "sweep"})
    parents = {r.data.tags.get("mta.sweep") for r in runs if r.data.tags.get("mta.role") == "sweep"}
    if query.sweep in parents and query.sweep not in trained:
        return (f"no run of sweep {query.sweep!r} has finished: it has no training run yet (only its MLflow parent "
                f"run, in experiment {query.experiment!r}), so there is nothing to report; run its trials with "
                f"`mta-lab sweep run SWEEP_FILE` (see `mta-lab sweep status SWEEP_FILE`), then report again")
    return (f"no training runs match {query.describe()}; sweeps in this experiment: "
            f"{', '.join(trained) if trained else 'none'}")


def _row(run) -> dict:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    row = {"run_id": run.info.run_id, "run_name": run.info.run_name or tags.get("mlflow.runName", ""),
           "status": run.info.status, "start_time": run.info.start_time or 0}
    row |= {"variant": tags.get("mta.variant", params.get("attention", "?")), "seed": tags.get("mta.seed", "?"),
            "size": tags.get("mta.size", params.get("model", "?")), "sweep": tags.get("mta.sweep", "none"),
            "trial": tags.get("mta.trial", "none"), "attention": params.get("attention", tags.get("mta.variant", "?"))}
    row["seed_order"] = _as_number(row["seed"])
    row |= {f"tags.{k}": v for k, v in tags.items() if not k.startswith("mlflow.")}
    row |= {f"params.{k}": v for k, v in params.items()}
    row |= {f"metrics.{k}": v for k, v in metrics.items()}
    return row


def _as_number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.inf


def finished_runs(df: pd.DataFrame, query: RunQuery) -> pd.DataFrame:
    done = df[df["status"] == FINISHED]
    if done.empty:
        counts = df["status"].value_counts().to_dict()
        seen = ", ".join(f"{n} {s}" for s, n in counts.items())
        raise ReportError(f"no FINISHED runs for {query.describe()} ({seen}); wait for the sweep to finish, or check "
                          "its failures with `mta-lab sweep status`")
    return done


def require_metric(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The runs all carry `metric` (a finite number), or a ReportError naming those that do not."""
    column = f"metrics.{metric}"
    values = df[column] if column in df else pd.Series(float("nan"), index=df.index)
    missing = df[values.isna()]
    if not missing.empty:
        names = ", ".join(f"{r.run_name or '?'} ({r.run_id[:8]})" for r in missing.itertuples())
        available = sorted({c.removeprefix("metrics.") for c in df.columns if c.startswith("metrics.final/")})
        raise ReportError(f"{len(missing)} of {len(df)} runs lack the metric {metric!r}: {names}; metrics these runs "
                          f"have: {', '.join(available) or 'none'} (choose one with --metric)")
    return df


def numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """A params/metrics column as floats (params are stored as text); NaN where absent."""
    if column not in df:
        return pd.Series(float("nan"), index=df.index)
    return pd.to_numeric(df[column], errors="coerce")


def metric_histories(uri: str, run_ids: list[str], keys: list[str], *, client=None) -> pd.DataFrame:
    """Per-step values of `keys` for `run_ids`: columns run_id, key, step, value (sorted by step)."""
    client = client or client_for(uri)
    rows = [{"run_id": rid, "key": key, "step": m.step, "value": m.value}
            for rid in run_ids for key in keys for m in client.get_metric_history(rid, key)]
    df = pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
    return df.sort_values(["run_id", "key", "step"]).reset_index(drop=True)
