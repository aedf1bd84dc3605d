"""`create`: the Optuna study of a sweep, its MLflow parent run, and (ablation/scaling) its fixed trials.

Idempotent, also when several workers call it at once: a lock file in the sweep directory serialises creation,
and study user attributes record what was already done (parent run, enqueued trials). Before the study exists,
every trial is composed (a bad variant fails, named, with nothing created); once it exists, the sweep file must
still define the same trials (a hash on the study; a changed file is one SweepChanged saying what changed).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna

from mta_lab.errors import UserError
from mta_lab.fields import plain
from mta_lab.sweep.spec import SweepSpec

ATTR_SPEC = "mta.spec"
ATTR_GIT = "mta.git_sha"
ATTR_BASE = "mta.base_config"
ATTR_PARENT = "mta.parent_run_id"
ATTR_URI = "mta.tracking_uri"
ATTR_EXPERIMENT = "mta.experiment"
ATTR_ENQUEUED = "mta.enqueued"
ATTR_SPEC_HASH = "mta.spec_hash"  # the identity of the spec it was created with (mta_lab/sweep/changes.py)


@dataclass
class Sweep:
    """An opened sweep: its spec, directory, Optuna study and MLflow parent run."""

    spec: SweepSpec
    sweep_dir: Path
    study: optuna.Study
    parent_run_id: str
    tracking_uri: str
    experiment: str

    @property
    def runs_root(self) -> Path:
        return self.sweep_dir / "runs"


def default_dir(spec: SweepSpec) -> Path:
    return Path("runs") / "sweeps" / spec.name


def resolve_dir(spec: SweepSpec, sweep_dir: str | Path | None) -> Path:
    return Path(sweep_dir if sweep_dir is not None else default_dir(spec)).resolve()


def tracking_of(spec: SweepSpec, sweep_dir: Path) -> tuple[str, str]:
    uri = spec.tracking.uri or f"sqlite:///{sweep_dir}/mlflow.db"
    return uri, spec.tracking.experiment or spec.name


def spec_dict(spec: SweepSpec) -> dict:
    data = dataclasses.asdict(spec)
    data.pop("source", None)
    return plain(data)


def check_sweep_paths(spec: SweepSpec, sweep_dir: Path) -> None:
    """The sweep directory (journal, runs, lock) and a sqlite tracking database's folder can be written; one
    PathError naming the path and the fix otherwise, before anything is created."""
    from mta_lab.train.preflight import check_writable_dir

    check_writable_dir(sweep_dir, f"sweep directory {sweep_dir}", "pass --dir DIR on a writable filesystem")
    uri, _ = tracking_of(spec, sweep_dir)
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        check_writable_dir(folder, f"tracking.uri={uri}", "point the sweep's tracking.uri to a writable folder")


@contextmanager
def creation_lock(sweep_dir: Path):
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".create.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _direction(spec: SweepSpec) -> str:
    return spec.objective.direction


def _sampler_and_pruner(spec: SweepSpec):
    if spec.hpo is None:
        return optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner()
    from mta_lab.sweep.space import build_pruner, build_sampler, parse_space

    return build_sampler(spec.hpo, parse_space(spec.hpo.space)), build_pruner(spec.hpo)


def _load_study(spec: SweepSpec, storage) -> optuna.Study:
    sampler, pruner = _sampler_and_pruner(spec)
    return optuna.load_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner)


def _parent_run(spec: SweepSpec, uri: str, experiment: str, sweep_dir: Path) -> str:
    from mlflow.tracking import MlflowClient

    from mta_lab.tracking.experiments import get_or_create_experiment
    from mta_lab.tracking.mlflow_run import check_reachable, default_artifact_location, git_sha

    check_reachable(uri)
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, experiment, default_artifact_location(uri))
    existing = client.search_runs([exp_id], filter_string=f"tags.`mta.sweep` = '{spec.name}' and "
                                  "tags.`mta.role` = 'sweep'", max_results=1)
    if existing:
        return existing[0].info.run_id
    run = client.create_run(exp_id, run_name=spec.name, tags={
        "mta.sweep": spec.name, "mta.kind": spec.kind, "mta.role": "sweep", "mta.git_sha": git_sha(),
        "mta.sweep_dir": str(sweep_dir), "mta.trial": "none", "mta.variant": "none", "mta.seed": "none",
        "mlflow.note.content": spec.description or f"{spec.kind} sweep {spec.name}"})
    return run.info.run_id


def _created_attrs(spec: SweepSpec, storage) -> dict | None:
    """The user attributes of the sweep's study in `storage`, None when it has none (read only)."""
    try:
        study_id = storage.get_study_id_from_name(spec.name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id)


def check_unchanged(spec: SweepSpec, attrs: dict, sweep_dir: Path) -> None:
    """SweepChanged when the sweep file no longer defines the trials the study was created with."""
    from mta_lab.sweep.changes import check_unchanged as check

    if ATTR_SPEC in attrs:
        check(attrs[ATTR_SPEC], spec_dict(spec), name=spec.name, source=spec.source, sweep_dir=sweep_dir,
              stored_hash=attrs.get(ATTR_SPEC_HASH))


def create(spec: SweepSpec, sweep_dir: str | Path | None = None) -> Sweep:
    """Create (or open) the sweep: study, MLflow parent run, spec (and its hash)/git SHA/base config on the study
    and the fixed trials enqueued once. Calling it again, or from several processes at once, changes nothing but
    the run policy on the study (max_failures, max_retries, ...); a changed sweep file raises SweepChanged."""
    from mta_lab.sweep.changes import spec_hash
    from mta_lab.sweep.storage import journal_path, open_storage, with_remembered_storage
    from mta_lab.sweep.validate import check_trials
    from mta_lab.tracking.mlflow_run import git_sha

    sweep_dir = resolve_dir(spec, sweep_dir)
    spec = with_remembered_storage(spec, sweep_dir)
    check_sweep_paths(spec, sweep_dir)
    if spec.hpo is not None:
        _sampler_and_pruner(spec)  # a bad space / sampler / pruner fails before anything is created
    storage = open_storage(spec, sweep_dir) if spec.storage is not None or journal_path(sweep_dir).exists() \
        else None
    known = _created_attrs(spec, storage) if storage is not None else None
    if known is not None and ATTR_SPEC in known:
        check_unchanged(spec, known, sweep_dir)
        base = None
    else:
        base = check_trials(spec)  # every trial composes, or one message naming the variant; nothing created yet
    storage = storage or open_storage(spec, sweep_dir)
    uri, experiment = tracking_of(spec, sweep_dir)
    with creation_lock(sweep_dir):
        sampler, pruner = _sampler_and_pruner(spec)
        study = optuna.create_study(study_name=spec.name, storage=storage, direction=_direction(spec),
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        if study.direction.name.lower() != spec.objective.direction:
            from mta_lab.sweep.spec import SweepSpecError

            raise SweepSpecError(f"sweep.objective.direction: the existing study {spec.name} was created to "
                                 f"{study.direction.name.lower()}; use another sweep name or --dir")
        attrs = study.user_attrs
        current = spec_dict(spec)
        if ATTR_SPEC not in attrs:
            study.set_user_attr(ATTR_SPEC, current)
            study.set_user_attr(ATTR_SPEC_HASH, spec_hash(current))
            study.set_user_attr(ATTR_GIT, git_sha())
            study.set_user_attr(ATTR_BASE, base if base is not None else check_trials(spec))
        else:
            check_unchanged(spec, attrs, sweep_dir)  # also when another process created it meanwhile
            if json.dumps(attrs[ATTR_SPEC], sort_keys=True) != json.dumps(current, sort_keys=True):
                study.set_user_attr(ATTR_SPEC, current)  # only the run policy differs (requeue reads max_retries)
            if ATTR_SPEC_HASH not in attrs:
                study.set_user_attr(ATTR_SPEC_HASH, spec_hash(current))
        parent = attrs.get(ATTR_PARENT) or _parent_run(spec, uri, experiment, sweep_dir)
        if ATTR_PARENT not in attrs:
            study.set_user_attr(ATTR_PARENT, parent)
            study.set_user_attr(ATTR_URI, uri)
            study.set_user_attr(ATTR_EXPERIMENT, experiment)
        if not attrs.get(ATTR_ENQUEUED):
            trials = study.get_trials(deepcopy=False)
            planned = {(t.user_attrs.get("variant"), t.user_attrs.get("seed")) for t in trials}
            for plan in spec.fixed_trials():
                if (plan.variant, plan.seed) not in planned:
                    study.enqueue_trial({}, user_attrs={"variant": plan.variant, "seed": plan.seed,
                                                        "overrides": list(plan.overrides)}, skip_if_exists=False)
            study.set_user_attr(ATTR_ENQUEUED, True)
        attrs = study.user_attrs
    return Sweep(spec, sweep_dir, study, attrs[ATTR_PARENT], attrs.get(ATTR_URI, uri),
                 attrs.get(ATTR_EXPERIMENT, experiment))


def open_sweep(spec: SweepSpec, sweep_dir: str | Path | None = None) -> Sweep:
    """An existing sweep (no creation); a clear error when `create` was not run for it, or when the sweep file
    changed since (SweepChanged)."""
    from mta_lab.sweep.storage import open_storage, with_remembered_storage

    sweep_dir = resolve_dir(spec, sweep_dir)
    spec = with_remembered_storage(spec, sweep_dir)  # the PostgreSQL URL a cluster profile gave it at submit
    if spec.storage is None and not (sweep_dir / "optuna.journal").exists():
        raise SweepNotCreated(f"sweep {spec.name}: no study in {sweep_dir}; run `mta-lab sweep create "
                              f"{spec.source or 'SWEEP_FILE'}` (or `sweep run`) first, or pass --dir")
    storage = open_storage(spec, sweep_dir)
    try:
        study = _load_study(spec, storage)
    except KeyError:
        raise SweepNotCreated(f"sweep {spec.name}: no such study in {spec.storage or sweep_dir}; run `mta-lab sweep "
                              "create SWEEP_FILE` first") from None
    attrs = study.user_attrs
    check_unchanged(spec, attrs, sweep_dir)
    uri, experiment = tracking_of(spec, sweep_dir)
    return Sweep(spec, sweep_dir, study, attrs.get(ATTR_PARENT, ""), attrs.get(ATTR_URI, uri),
                 attrs.get(ATTR_EXPERIMENT, experiment))


def close_parent(sweep: Sweep, status: str) -> None:
    """Set the MLflow parent run's status (FINISHED when every trial ended, FAILED when the sweep stopped on
    failures); a later `run` that has work again sets it back to RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(sweep.tracking_uri)
    if client.get_run(sweep.parent_run_id).info.status != status:
        client.update_run(sweep.parent_run_id, status=status)


class SweepNotCreated(UserError, ValueError):
    """The sweep's study does not exist yet."""

