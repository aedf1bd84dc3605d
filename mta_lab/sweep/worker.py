"""One sweep worker: ask -> compose -> train -> tell, until the sweep has no work left.

Fixed trials (ablation/scaling variants x seeds) are taken from the study's queue; HPO trials are sampled until
`hpo.n_trials` have been started. A trial whose training raises (a NaN loss, a bad override, anything) is told
FAIL with its reason and the worker goes on; more than `max_failures` failed trials stop every worker. Ctrl-C or
SIGTERM ends the running trial (MLflow: KILLED), puts it back in the queue and stops the worker.
"""

from __future__ import annotations

import math
import os
import socket
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from mta_lab.sweep.ranks import Handoff, task_group
from mta_lab.sweep.signals import WHY, WorkerSignals
from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.study import Sweep, close_parent, create, open_sweep, resolve_dir

FAILURE = "mta.failure"  # user attr: the reason a trial failed
FAILURE_KIND = "mta.failure_kind"  # error | diverged | died | interrupted (interrupted ones are not failures)
RECORDED = "mta.recorded"  # user attr: the sweep's `record` metrics of the trial (aggregated over its seeds)
WORKER_KEYS = ("mta.host", "mta.pid", "mta.started", "mta.run_dirs", "mta.attempt", FAILURE, FAILURE_KIND)


class SweepFailed(RuntimeError):
    """More trials failed than the sweep's max_failures allows."""


@dataclass
class WorkerSummary:
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    stopped: str = ""

    @property
    def ran(self) -> int:
        return len(self.completed) + len(self.failed) + len(self.pruned) + len(self.interrupted)


# ---------------------------------------------------------------------------------------------------- helpers
def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were put back in the queue (a retry or a requeue replaces them)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", ()))
        if "mta.requeued_from" in t.system_attrs:
            out.add(t.system_attrs["mta.requeued_from"])
    return out


def failures(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Failed trials that count against max_failures: not interrupted ones, nor attempts put back in the queue for
    a retry (a worker that died: its retry's outcome counts instead)."""
    gone = superseded(trials)
    return [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(FAILURE_KIND) != "interrupted"
            and t.number not in gone]


def retried(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Failed attempts (not interrupted) whose variant/seed or params went back in the queue as a retry."""
    gone = superseded(trials)
    return [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(FAILURE_KIND) != "interrupted"
            and t.number in gone]


def requeue(study: optuna.Study, trial: FrozenTrial, *, retry: bool) -> bool:
    """Put a failed trial's variant/seed (or params) back in the queue as a new trial. `retry` counts it against
    max_retries (the same system attrs as optuna's RetryHeartbeatStaleTrialCallback); an interrupted trial is
    requeued without counting. Returns whether it was requeued."""
    spec_retries = study.user_attrs.get("mta.spec", {}).get("max_retries", 0)
    system = {k: v for k, v in trial.system_attrs.items() if k != "mta.requeued_from"}
    if retry:
        history = [*system.get("retry_history", []), trial.number]
        if len(history) > spec_retries:
            return False
        system.update(failed_trial=system.get("failed_trial", trial.number), retry_history=history)
    else:
        system["mta.requeued_from"] = trial.number
        # The next attempt continues the interrupted runs' directories from their newest complete checkpoint.
        system["mta.resume_dirs"] = [*system.get("mta.resume_dirs", []), *trial.user_attrs.get("mta.run_dirs", [])]
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in WORKER_KEYS}, system_attrs=system))
    return True


def _pop_waiting(study: optuna.Study) -> optuna.Trial | None:
    """Take a queued trial, atomically (the storage refuses a trial another worker took first); never a new one."""
    storage = study._storage
    for frozen in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, frozen._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def hpo_started(trials: list[FrozenTrial]) -> int:
    gone = superseded(trials)
    return sum(1 for t in trials if t.state != TrialState.WAITING and t.number not in gone)


def next_trial(sweep: Sweep) -> optuna.Trial | None:
    """The next trial for this worker, or None when the sweep has nothing left to start."""
    study, spec = sweep.study, sweep.spec
    if spec.hpo is None:
        return _pop_waiting(study)
    from mta_lab.sweep.space import parse_space
    from mta_lab.sweep.study import creation_lock

    space = parse_space(spec.hpo.space)
    with creation_lock(sweep.sweep_dir):  # count-then-ask without another local worker in between
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and hpo_started(trials) >= spec.hpo.n_trials:
            return None
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Heartbeat.*")
            return study.ask(fixed_distributions=space)


class Heartbeat:
    """Records the trial's heartbeat while it trains: in the RDB storage (with heartbeat_interval) and as the mtime
    of <sweep dir>/heartbeats/trial-N (any storage), so that other workers, on any host, fail and retry it only
    when this worker is really gone. The file is removed when the trial ends."""

    def __init__(self, sweep: Sweep, trial: optuna.Trial) -> None:
        import threading

        from mta_lab.sweep.storage import heartbeat_file, heartbeat_s

        storage = sweep.study._storage
        self.rdb = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.interval = min(self.rdb or heartbeat_s(), heartbeat_s())
        self.file = heartbeat_file(sweep.sweep_dir, trial.number)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial._trial_id), daemon=True)

    def _beat(self, storage, trial_id: int) -> None:
        while True:
            try:
                self.file.touch()
                if self.rdb:
                    storage.record_heartbeat(trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the trial itself reports real errors
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self):
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.touch()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.file.unlink(missing_ok=True)


def _wait_for_others(sweep: Sweep, signals: WorkerSignals, console: Console) -> bool:
    """Nothing left to start: wait while other workers' trials run, taking over any whose worker is gone (its
    process, on this host, or its heartbeat file, on any host, stale for grace_s()), so that the last worker to
    leave leaves no trial RUNNING. True when there is a trial to take again."""
    from mta_lab.sweep.status import reap
    from mta_lab.sweep.storage import grace_s, heartbeat_s

    told = False
    while not signals.stop:
        trials = sweep.study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return True
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if not running:
            return False
        if reap(sweep, min_age_s=grace_s()):
            return True
        if not told:
            console.print(f"waiting for trial(s) {running} of other workers (taken over if a worker's heartbeat "
                          f"stops for {grace_s():.0f} s)", highlight=False)
            told = True
        time.sleep(min(5.0, heartbeat_s()))
    return False


def _run_id_of(run_dir: Path) -> str | None:
    path = run_dir / "mlflow_run_id"
    run_id = path.read_text().strip() if path.exists() else ""
    return run_id or None  # empty: interrupted between creating the file and writing the id


def mark_mlflow(uri: str, run_dir: Path, status: str, reason: str, **tags: str) -> None:
    """Close a trial's MLflow run with `status` and a reason (when the run exists and is not already closed
    with that status)."""
    run_id = _run_id_of(run_dir)
    if run_id is None:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "mta.failure_reason", reason[:5000])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if client.get_run(run_id).info.status != status:
        client.set_terminated(run_id, status=status)


def compose(sweep: Sweep, frozen: FrozenTrial, seed: int, params: dict) -> tuple[str, object]:
    """The trial's RunConfig: base + variant overrides (or sampled params) + seed, placed under the sweep."""
    from mta_lab.conf import load_run_config
    from mta_lab.sweep.space import to_override

    spec = sweep.spec
    ua = frozen.user_attrs
    variant = ua.get("variant", "hpo")
    overrides = [*spec.base, *ua.get("overrides", ()), *(to_override(k, v) for k, v in params.items()),
                 f"train.seed={seed}"]
    name = f"{spec.name}-{variant}-s{seed}-t{frozen.number}"
    # An interrupted attempt of this variant/seed (time limit, preemption, Ctrl-C) is continued in its own run
    # directory, hence in its own MLflow run, from its newest complete checkpoint: no finished step trains twice.
    earlier = [Path(d).name for d in frozen.system_attrs.get("mta.resume_dirs", ())
               if Path(d).name.startswith(f"{spec.name}-{variant}-s{seed}-t")]
    resume = "auto" if earlier else "never"
    name = earlier[-1] if earlier else name
    config = load_run_config(overrides, stamp=name)
    retried_from = frozen.system_attrs.get("failed_trial", frozen.system_attrs.get("mta.requeued_from"))
    tags = {"mta.sweep": spec.name, "mta.trial": str(frozen.number), "mta.variant": variant, "mta.seed": str(seed),
            "mta.attempt": str(len(frozen.system_attrs.get("retry_history", [])) + 1), "mta.kind": spec.kind,
            **({"mta.retried_from": str(retried_from)} if retried_from is not None else {}),
            **({f"mta.param.{k}": str(v) for k, v in params.items()})}
    tracking = replace(config.tracking, uri=sweep.tracking_uri, experiment=sweep.experiment, run_name=name,
                       tags={**config.tracking.tags, **tags})
    return name, replace(config, root=str(sweep.runs_root), name=name, resume=resume, tracking=tracking)


# ---------------------------------------------------------------------------------------------------- the loop
def _value(metrics: dict, metric: str, eval_failures: dict | None = None) -> float:
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        task = metric.split("/")[1] if metric.startswith("eval/") and metric.count("/") >= 2 else None
        if task and task in (eval_failures or {}):
            raise KeyError(f"objective metric {metric} is missing: eval {task} failed after training (the run is "
                           f"FINISHED, tag mta.eval_failed): {eval_failures[task]}")
        shown = ", ".join(sorted(k for k, v in metrics.items() if v is not None and k.count("/") < 3))
        raise KeyError(f"objective metric {metric} is {'missing' if value is None else value} in the run's final "
                       f"metrics ({shown})")
    return float(value)


def _recorded(spec: SweepSpec, per_seed: list[dict]) -> dict:
    """`spec.record`'s metrics aggregated over the seeds that have them (as the objective); absent ones left out."""
    out = {}
    for metric in spec.record:
        values = [m[metric] for m in per_seed if isinstance(m.get(metric), int | float) and math.isfinite(m[metric])]
        if values:
            out[metric] = statistics.median(values) if spec.aggregate == "median" else statistics.fmean(values)
    return out


def run_trial(sweep: Sweep, trial: optuna.Trial, signals: WorkerSignals, console: Console, summary: WorkerSummary,
              handoff: Handoff | None = None) -> None:
    from mta_lab.errors import TrainingDiverged
    from mta_lab.sweep.pruning import OptunaPruning
    from mta_lab.train.entry import train

    spec, study = sweep.spec, sweep.study
    frozen = study._storage.get_trial(trial._trial_id)
    params = dict(trial.params)
    seeds = [frozen.user_attrs["seed"]] if spec.hpo is None else list(spec.seeds)
    attempt = len(frozen.system_attrs.get("retry_history", [])) + 1
    trial.set_user_attr("mta.host", socket.gethostname())
    trial.set_user_attr("mta.pid", os.getpid())
    trial.set_user_attr("mta.started", time.time())
    trial.set_user_attr("mta.attempt", attempt)
    run_dirs: list[str] = []
    values: list[float] = []
    per_seed: list[dict] = []
    label = f"trial {trial.number} ({frozen.user_attrs.get('variant', params)})"
    try:
        for i, seed in enumerate(seeds):
            name, config = compose(sweep, frozen, seed, params)
            run_dirs.append(config.run_dir)
            trial.set_user_attr("mta.run_dirs", run_dirs)
            console.print(f"[bold]{label}[/] seed {seed}: training {name}", highlight=False)
            callbacks = []
            if spec.hpo is not None and spec.hpo.pruner.name != "none" and i == 0 and handoff is None:
                callbacks.append(OptunaPruning(trial, spec.hpo.report_metric))
            if handoff is not None:  # the other srun tasks join this training as DDP ranks
                handoff.announce(frozen.number, seed, params)
            if signals.stop:  # a signal came while the trial was being claimed or composed: do not start it
                raise KeyboardInterrupt
            signals.training = True
            try:
                result = train(config, progress=False, extra_callbacks=callbacks)
            finally:
                signals.training = False
            per_seed.append(result.metrics)
            values.append(_value(result.metrics, spec.objective.metric, getattr(result, "eval_failures", None)))
            if signals.stop:
                break
    except optuna.TrialPruned as err:
        mark_mlflow(sweep.tracking_uri, Path(run_dirs[-1]), "KILLED", f"pruned: {err}", **{"mta.pruned": "true"})
        study.tell(trial, state=TrialState.PRUNED)
        summary.pruned.append(trial.number)
        console.print(f"[yellow]{label}: pruned[/] ({err})", highlight=False)
        return
    except Exception as err:  # noqa: BLE001 - any failure of one trial is recorded, the sweep goes on
        reason = f"{type(err).__name__}: {' '.join(str(err).split())}"[:2000]
        trial.set_user_attr(FAILURE, reason)
        trial.set_user_attr(FAILURE_KIND, "diverged" if isinstance(err, TrainingDiverged) else "error")
        if run_dirs:
            mark_mlflow(sweep.tracking_uri, Path(run_dirs[-1]), "FAILED", reason)
        study.tell(trial, state=TrialState.FAIL)
        summary.failed.append(trial.number)
        console.print(f"[red]{label}: failed[/] {reason}", highlight=False)
        return
    except BaseException:  # Ctrl-C / SIGTERM / SIGUSR2 (Lightning turns KeyboardInterrupt into SystemExit)
        _interrupted(sweep, trial, run_dirs, summary, signals.name, console, label)
        raise KeyboardInterrupt from None
    if len(values) < len(seeds):  # stopped between the seeds of an HPO trial
        _interrupted(sweep, trial, run_dirs, summary, signals.name, console, label)
        return
    value = statistics.median(values) if spec.aggregate == "median" else statistics.fmean(values)
    if spec.record:
        trial.set_user_attr(RECORDED, _recorded(spec, per_seed))
    study.tell(trial, value)
    summary.completed.append(trial.number)
    console.print(f"[green]{label}: {spec.objective.metric}={value:.4f}[/]", highlight=False)


def _interrupted(sweep: Sweep, trial: optuna.Trial, run_dirs: list[str], summary: WorkerSummary,
                 signal_name: str, console: Console, label: str) -> None:
    why = WHY.get(signal_name, signal_name or "Ctrl-C")
    reason = f"interrupted ({why}); requeued, the next attempt resumes from its last checkpoint"
    trial.set_user_attr(FAILURE, reason)
    trial.set_user_attr(FAILURE_KIND, "interrupted")
    if run_dirs:
        mark_mlflow(sweep.tracking_uri, Path(run_dirs[-1]), "KILLED", reason)
    sweep.study.tell(trial, state=TrialState.FAIL)
    requeue(sweep.study, sweep.study._storage.get_trial(trial._trial_id), retry=False)
    summary.interrupted.append(trial.number)
    console.print(f"[yellow]{label}: {reason}[/]", highlight=False)


def run_worker(spec: SweepSpec | str | Path, *, sweep_dir: str | Path | None = None, max_trials: int | None = None,
               console: Console | None = None, signals: WorkerSignals | None = None) -> WorkerSummary:
    """Run trials until none is left (or `max_trials` ran). Raises SweepFailed when failures exceed max_failures.
    `signals`: handlers the caller installed already (a SLURM job does so first thing); a signal they caught
    before this call stops the worker before it claims a trial."""
    if not isinstance(spec, SweepSpec):
        spec = SweepSpec.load(spec)
    console = console or Console()
    group = task_group()
    if not group.leader:  # another srun task of a multi-GPU trial: train what rank 0 hands over
        return follow(spec, sweep_dir, Handoff(resolve_dir(spec, sweep_dir), group), console)
    handoff = Handoff(resolve_dir(spec, sweep_dir), group) if group.world > 1 else None
    sweep = create(spec, sweep_dir)
    if next((t for t in sweep.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))), None) is not None:
        close_parent(sweep, "RUNNING")
    os.environ["MTA_PARENT_RUN_ID"] = sweep.parent_run_id
    summary = WorkerSummary()
    from contextlib import nullcontext

    from mta_lab.sweep.status import fail_stale

    with nullcontext(signals) if signals is not None else WorkerSignals() as signals:
        try:
            while max_trials is None or summary.ran < max_trials:
                if signals.stop:
                    summary.stopped = "interrupted"
                    break
                if spec.storage is not None:
                    fail_stale(sweep)
                trials = sweep.study.get_trials(deepcopy=False)
                failed = failures(trials)
                if len(failed) > spec.max_failures:
                    close_parent(sweep, "FAILED")
                    raise SweepFailed(failed_message(spec, failed))
                trial = next_trial(sweep)
                if trial is None:
                    if _wait_for_others(sweep, signals, console):
                        continue
                    summary.stopped = "interrupted" if signals.stop else "no trials left"
                    break
                with Heartbeat(sweep, trial):
                    run_trial(sweep, trial, signals, console, summary, handoff)
            else:
                summary.stopped = f"max_trials={max_trials}"
        except KeyboardInterrupt:
            summary.stopped = "interrupted"
        finally:
            if handoff is not None:
                handoff.finish()
    trials = sweep.study.get_trials(deepcopy=False)
    failed = failures(trials)
    if len(failed) > spec.max_failures:
        close_parent(sweep, "FAILED")
        raise SweepFailed(failed_message(spec, failed))
    if summary.stopped == "no trials left" and not any(t.state in (TrialState.RUNNING, TrialState.WAITING)
                                                       for t in trials):
        close_parent(sweep, "FINISHED")
    return summary


def follow(spec: SweepSpec, sweep_dir: str | Path | None, handoff: Handoff, console: Console) -> WorkerSummary:
    """A rank > 0 of a multi-GPU trial: compose and train what rank 0 announces, until it says stop. Rank 0
    records every result; a follower's own failure is only printed (rank 0's training fails with it)."""
    from mta_lab.train.entry import train

    summary = WorkerSummary()
    sweep = None
    while True:
        record = handoff.next()
        if record.get("stop"):
            summary.stopped = "rank 0 stopped"
            return summary
        sweep = sweep or open_sweep(spec, sweep_dir)  # rank 0 created it before its first record
        frozen = sweep.study._storage.get_trial(sweep.study._storage.get_trial_id_from_study_id_trial_number(
            sweep.study._study_id, record["trial"]))
        _, config = compose(sweep, frozen, record["seed"], record["params"])
        try:
            train(config, progress=False)
        except Exception as err:  # noqa: BLE001 - rank 0 records the trial's failure
            console.print(f"rank {task_group().rank}: trial {record['trial']} failed here too: {err}")


def failed_message(spec: SweepSpec, failed: list[FrozenTrial]) -> str:
    lines = [f"sweep {spec.name} stopped: {len(failed)} trials failed, more than max_failures={spec.max_failures}"]
    for t in failed[:5]:
        lines.append(f"  trial {t.number} ({t.user_attrs.get('variant', t.params)}): "
                     f"{t.user_attrs.get(FAILURE, 'worker died')}")
    lines.append("fix the cause (see `mta-lab sweep status`), or raise max_failures in the sweep file, then run again")
    return "\n".join(lines)
