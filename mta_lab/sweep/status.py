"""`status` (a rich table of the study), `reap` (fail trials whose worker is gone, retry them) and `best`."""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from mta_lab.sweep.storage import grace_s, heartbeat_age_s, heartbeat_file
from mta_lab.sweep.study import Sweep
from mta_lab.sweep.worker import FAILURE, FAILURE_KIND, failures, hpo_started, requeue, retried

STATES = (("complete", TrialState.COMPLETE), ("running", TrialState.RUNNING), ("waiting", TrialState.WAITING),
          ("failed", TrialState.FAIL), ("pruned", TrialState.PRUNED))


# ---------------------------------------------------------------------------------------------------- reap
def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, killed but not yet waited for, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _close_runs(uri: str, run_dirs: list[str], reason: str) -> None:
    """Mark the trial's MLflow runs that are still RUNNING as FAILED with `reason`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for run_dir in run_dirs:
        path = Path(run_dir) / "mlflow_run_id"
        if not path.exists():
            continue
        run_id = path.read_text().strip()
        if not run_id:  # the worker died between creating the file and writing the id
            continue
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "mta.failure_reason", reason)
            client.set_terminated(run_id, status="FAILED")


def close_dead_runs(sweep: Sweep) -> None:
    """Failed trials nobody told (a stale heartbeat on PostgreSQL): their MLflow runs become FAILED, not RUNNING."""
    for t in sweep.study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if FAILURE not in t.user_attrs and t.user_attrs.get("mta.run_dirs"):
            _close_runs(sweep.tracking_uri, t.user_attrs["mta.run_dirs"], "worker died (heartbeat stale)")


def fail_stale(sweep: Sweep) -> None:
    """RDB storage: fail (and retry, per max_retries) trials whose heartbeat went stale; close their MLflow runs."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(sweep.study)
    close_dead_runs(sweep)


def reap(sweep: Sweep, *, min_age_s: float = 120.0) -> list[int]:
    """Fail the RUNNING trials whose heartbeat file is older than grace_s() (any host), whose worker process on
    this host is gone, or that never recorded a worker within `min_age_s`; mark their MLflow runs FAILED
    ('worker died') and requeue them while retries remain. With an RDB storage, stale heartbeats are failed and
    retried too. Returns the reaped trial numbers."""
    import optuna

    study, storage = sweep.study, sweep.study._storage
    if sweep.spec.storage is not None:
        fail_stale(sweep)
    host, reaped = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, where = t.user_attrs.get("mta.pid"), t.user_attrs.get("mta.host")
        age = heartbeat_age_s(heartbeat_file(sweep.sweep_dir, t.number))
        if age is not None and age > grace_s():  # any host: its worker stopped beating (kill -9, a lost node)
            reason = f"worker died (pid {pid} on {where}: no heartbeat for {age:.0f} s)"
        elif pid is not None:
            if where != host or pid_alive(int(pid)):
                continue
            reason = f"worker died (pid {pid} on {where} is gone)"
        else:
            started = t.datetime_start.timestamp() if t.datetime_start else time.time()
            if time.time() - started < min_age_s:
                continue
            reason = "worker died (never recorded its process)"
        storage.set_trial_user_attr(t._trial_id, FAILURE, reason)
        storage.set_trial_user_attr(t._trial_id, FAILURE_KIND, "died")
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        heartbeat_file(sweep.sweep_dir, t.number).unlink(missing_ok=True)
        _close_runs(sweep.tracking_uri, t.user_attrs.get("mta.run_dirs", []), reason)
        requeue(study, storage.get_trial(t._trial_id), retry=True)
        reaped.append(t.number)
    return reaped


# ---------------------------------------------------------------------------------------------------- summaries
@dataclass
class VariantStats:
    variant: str
    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def variant_stats(sweep: Sweep) -> list[VariantStats]:
    """The objective per variant over its completed seeds, in the sweep file's order."""
    order = [p.variant for p in sweep.spec.fixed_trials()]
    stats = {v: VariantStats(v) for v in dict.fromkeys(order)}
    for t in sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        variant = t.user_attrs.get("variant")
        if variant in stats:
            stats[variant].values.append(float(t.value))
    return list(stats.values())


def best(sweep: Sweep) -> dict | None:
    """HPO: the best completed trial (number, value, params). Fixed sweeps: the best variant by its aggregated
    objective over seeds. None while nothing completed."""
    spec = sweep.spec
    sign = 1 if spec.objective.direction == "minimize" else -1
    if spec.hpo is None:
        stats = [s for s in variant_stats(sweep) if s.values]
        if not stats:
            return None
        agg = (lambda s: statistics.median(s.values)) if spec.aggregate == "median" else (lambda s: s.mean)
        top = min(stats, key=lambda s: sign * agg(s))
        return {"variant": top.variant, "value": agg(top), "std": top.std, "seeds": len(top.values),
                "metric": spec.objective.metric}
    done = sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    top = min(done, key=lambda t: sign * t.value)
    return {"trial": top.number, "value": top.value, "params": dict(top.params), "metric": spec.objective.metric}


def _durations(trials: list[FrozenTrial]) -> list[float]:
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
            if t.state == TrialState.COMPLETE and t.datetime_start and t.datetime_complete]


def counts(sweep: Sweep) -> dict[str, int]:
    """Trials per state; an attempt stopped by a signal, a time limit or a preemption (its variant/seed went
    back in the queue) counts as `interrupted`, not `failed`."""
    trials = sweep.study.get_trials(deepcopy=False)
    n = {name: sum(1 for t in trials if t.state == state) for name, state in STATES}
    n["interrupted"] = sum(1 for t in trials if t.state == TrialState.FAIL
                           and t.user_attrs.get(FAILURE_KIND) == "interrupted")
    n["failed"] -= n["interrupted"]
    return n


def work_left(sweep: Sweep, trials: list[FrozenTrial] | None = None) -> int:
    """Trials a worker could still take or wait for: waiting + running (+ HPO trials not yet started)."""
    trials = sweep.study.get_trials(deepcopy=False) if trials is None else trials
    left = sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)
    if sweep.spec.hpo is not None:
        left += max(0, sweep.spec.hpo.n_trials - hpo_started(trials))
    return left


def eta_s(sweep: Sweep, workers: int | None = None) -> float | None:
    trials = sweep.study.get_trials(deepcopy=False)
    durations = _durations(trials)
    if not durations:
        return None
    running = [t for t in trials if t.state == TrialState.RUNNING]
    left = work_left(sweep, trials)
    workers = workers or len({(t.user_attrs.get("mta.host"), t.user_attrs.get("mta.pid")) for t in running}) or 1
    return statistics.fmean(durations) * left / workers


def render_status(sweep: Sweep, console: Console) -> None:
    spec, trials = sweep.spec, sweep.study.get_trials(deepcopy=False)
    n = counts(sweep)
    table = Table(title=f"sweep {spec.name} ({spec.kind}) - {sweep.sweep_dir}")
    for name in n:
        table.add_column(name, justify="right")
    table.add_row(*(str(value) for value in n.values()))
    console.print(table)
    top = best(sweep)
    if top is None:
        console.print("best so far: none completed yet")
    elif "variant" in top:
        console.print(f"best so far: [bold]{top['variant']}[/] {top['metric']}={top['value']:.4f} ± {top['std']:.4f} "
                      f"({top['seeds']} seeds)", highlight=False)
    else:
        console.print(f"best so far: trial {top['trial']} {top['metric']}={top['value']:.4f} {top['params']}",
                      highlight=False)
    if spec.hpo is None:
        per = Table(title=f"{spec.objective.metric} per variant ({spec.aggregate} over seeds)")
        for col in ("variant", "seeds done", "mean", "std"):
            per.add_column(col, justify="left" if col == "variant" else "right")
        for s in variant_stats(sweep):
            per.add_row(s.variant, f"{len(s.values)}/{len(spec.seeds)}",
                        f"{s.mean:.4f}" if s.values else "-", f"{s.std:.4f}" if s.values else "-")
        console.print(per)
    failed = failures(trials)
    if failed:
        console.print(f"[red]{len(failed)} failed[/] (max_failures={spec.max_failures}):")
        for t in failed[-5:]:
            console.print(f"  trial {t.number} ({t.user_attrs.get('variant', t.params)}): "
                          f"{t.user_attrs.get(FAILURE, 'worker died (heartbeat)')}", highlight=False)
    again = retried(trials)
    if again:
        console.print(f"[yellow]{len(again)} retried[/] (not counted against max_failures; max_retries="
                      f"{spec.max_retries}):")
        for t in again[-5:]:
            console.print(f"  trial {t.number} ({t.user_attrs.get('variant', t.params)}): "
                          f"{t.user_attrs.get(FAILURE, 'worker died (heartbeat)')}", highlight=False)
    eta = eta_s(sweep)
    if eta is not None and (n["waiting"] or n["running"] or spec.hpo is not None):
        console.print(f"ETA: {eta / 60:.1f} min at the current number of workers")
    console.print(f"MLflow: experiment '{sweep.experiment}' at {sweep.tracking_uri} (parent run {sweep.parent_run_id})",
                  highlight=False)
