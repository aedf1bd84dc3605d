"""SweepSpec: one YAML file under sweeps/ describing an ablation, an HPO study or a scaling sweep.

Every kind names a base (Hydra overrides every trial starts from, e.g. `[experiment=tiny, attention=mta]`),
an objective (an MLflow metric and a direction), seeds and how they aggregate, where runs are tracked and stored,
and how many failures stop it. Ablations and scaling sweeps expand into fixed trials (variant x seed); HPO samples
a search space written in Hydra's sweep grammar (`interval(a, b)`, `tag(log, interval(a, b))`, `choice(...)`,
`range(a, b[, step])`).

A sweep file may extend another: `extends: toy_table1.yaml` (a path relative to the extending file's folder;
the extended file may itself extend one). The extending file's keys are merged onto the extended file's, key by
key: a mapping (`objective`, `tracking`, `ablation`, `ablation.variants`, `hpo`, ...) is merged the same way, one
level deeper, new keys appended after the inherited ones; any other value (a list such as `base` or `seeds`, a
string, a number, null) replaces the inherited one. The extending file must set its own `name` (a study name is
unique). A missing extended file or a cycle of `extends` is one SweepSpecError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mta_lab.errors import UserError

KINDS = ("ablation", "hpo", "scaling")
DIRECTIONS = ("minimize", "maximize")
AGGREGATES = ("mean", "median")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("none", "median", "hyperband", "successive_halving", "percentile")
BUDGET_KINDS = ("tokens", "flops", "steps")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SweepSpecError(UserError, ValueError):
    """A bad sweep file: the message names the file, the field, the bad value and the fix."""


def _fail(where: str, problem: str) -> None:
    raise SweepSpecError(f"sweep.{where}: {problem}")


def _known_keys(cls, where: str, data: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        _fail(where, f"must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        _fail(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return dict(data)


def _overrides(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and "=" in v for v in value):
        _fail(where, f"must be a list of Hydra overrides like ['attention=mta', 'train.max_steps=200'], got {value!r}")
    return tuple(value)


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SweepSpecError(f"sweep file {path}: not valid YAML ({' '.join(str(err).split())})") from None


def merge(inherited: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """`own` onto `inherited`: mappings merge key by key (recursively), every other value replaces."""
    out = dict(inherited)
    for key, value in own.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_extended(path: Path, chain: tuple[Path, ...]) -> Any:
    """The file's keys with every `extends` resolved (chain: the files that extend this one, outermost first)."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved):], resolved))
        raise SweepSpecError(f"sweep file {chain[0]}: extends form a cycle ({cycle}); remove one `extends`")
    data = _read(path)
    if not isinstance(data, Mapping) or "extends" not in data:
        if chain and not isinstance(data, Mapping):
            raise SweepSpecError(f"sweep file {path} (extended by {chain[-1]}): must be a mapping of sweep keys")
        return data
    data = dict(data)
    parent = data.pop("extends")
    if not isinstance(parent, str) or not parent:
        raise SweepSpecError(f"sweep file {path}: extends={parent!r} must be the path of another sweep file, "
                             "relative to this file's folder (e.g. extends: toy_table1.yaml)")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise SweepSpecError(f"sweep file {path}: extends {parent!r}, but {parent_path} does not exist (the path is "
                             "relative to the extending file's folder)")
    if "name" not in data:
        raise SweepSpecError(f"sweep file {path}: a sweep that extends another must set its own name (the study "
                             f"name must differ from {parent!r}'s)")
    return merge(_read_extended(parent_path, (*chain, resolved)), data)


@dataclass(frozen=True)
class Objective:
    metric: str = "final/val_loss"
    direction: str = "minimize"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            _fail("objective.metric", f"{self.metric!r} must be an MLflow metric name such as final/val_loss")
        if self.direction not in DIRECTIONS:
            _fail("objective.direction", f"{self.direction!r} must be one of {', '.join(DIRECTIONS)}")


@dataclass(frozen=True)
class Tracking:
    experiment: str | None = None  # null: the sweep's name
    uri: str | None = None  # null: sqlite:///<sweep dir>/mlflow.db


@dataclass(frozen=True)
class Ablation:
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> overrides; the first is the baseline

    def __post_init__(self) -> None:
        if not self.variants:
            _fail("ablation.variants", "needs at least one named variant, e.g. {transformer: [attention=transformer]}")
        for name, overrides in self.variants.items():
            if not isinstance(name, str) or not _NAME.match(name):
                _fail("ablation.variants", f"variant name {name!r}: use letters, digits, '_', '.', '-'")
            object.__setattr__(self, "variants", {**self.variants, name: _overrides(f"ablation.variants.{name}",
                                                                                    overrides)})


@dataclass(frozen=True)
class Sampler:
    name: str = "tpe"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            _fail("hpo.sampler.name", f"{self.name!r} must be one of {', '.join(SAMPLERS)}")


@dataclass(frozen=True)
class Pruner:
    name: str = "none"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in PRUNERS:
            _fail("hpo.pruner.name", f"{self.name!r} must be one of {', '.join(PRUNERS)}")


@dataclass(frozen=True)
class Hpo:
    space: dict[str, str] = field(default_factory=dict)  # config key -> Hydra sweep expression
    sampler: Sampler = field(default_factory=Sampler)
    pruner: Pruner = field(default_factory=Pruner)
    n_trials: int = 20
    report_metric: str = "val/loss"  # intermediate value reported for pruning

    def __post_init__(self) -> None:
        if not self.space:
            _fail("hpo.space", "needs at least one parameter, e.g. {optim.lr: 'tag(log, interval(1e-4, 1e-2))'}")
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            _fail("hpo.n_trials", f"{self.n_trials!r} must be a positive integer")


@dataclass(frozen=True)
class Budgets:
    kind: str = "tokens"  # tokens -> train.token_budget, flops -> train.flop_budget, steps -> train.max_steps
    values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            _fail("scaling.budgets.kind", f"{self.kind!r} must be one of {', '.join(BUDGET_KINDS)}")
        values = tuple(self.values) if isinstance(self.values, list | tuple) else (self.values,)
        if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
            _fail("scaling.budgets.values", f"{self.values!r} must be a non-empty list of positive numbers")
        object.__setattr__(self, "values", values)

    def override(self, value: float) -> list[str]:
        key = {"tokens": "train.token_budget", "flops": "train.flop_budget", "steps": "train.max_steps"}[self.kind]
        others = [k for k in ("train.token_budget", "train.flop_budget", "train.max_steps") if k != key]
        shown = int(value) if self.kind != "flops" else value
        return [f"{key}={shown}", *(f"{k}=null" for k in others)]


@dataclass(frozen=True)
class Scaling:
    sizes: tuple[str, ...] = ()
    attentions: tuple[str, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)

    def __post_init__(self) -> None:
        for key in ("sizes", "attentions"):
            value = getattr(self, key)
            if not value or not all(isinstance(v, str) for v in value):
                _fail(f"scaling.{key}", f"{value!r} must be a non-empty list of preset names")
            object.__setattr__(self, key, tuple(value))


@dataclass(frozen=True)
class TrialPlan:
    """One fixed trial: a named variant at a seed, as Hydra overrides (before sweep-level placement)."""

    variant: str
    seed: int
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    kind: str
    base: tuple[str, ...] = ()
    objective: Objective = field(default_factory=Objective)
    seeds: tuple[int, ...] = (0,)
    aggregate: str = "mean"
    tracking: Tracking = field(default_factory=Tracking)
    storage: str | None = None  # null: journal file <sweep dir>/optuna.journal; else an SQLAlchemy URL
    max_failures: int = 3
    max_retries: int = 1
    description: str = ""
    record: tuple[str, ...] = ()  # metrics kept on each Optuna trial beside the objective (e.g. eval/niah/acc)
    ablation: Ablation | None = None
    hpo: Hpo | None = None
    scaling: Scaling | None = None
    source: str | None = None  # the file it was read from (not a YAML key)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            _fail("name", f"{self.name!r}: use letters, digits, '_', '.', '-' (it names the study and its runs)")
        if self.kind not in KINDS:
            _fail("kind", f"{self.kind!r} must be one of {', '.join(KINDS)}")
        if self.aggregate not in AGGREGATES:
            _fail("aggregate", f"{self.aggregate!r} must be one of {', '.join(AGGREGATES)}")
        seeds = tuple(self.seeds) if isinstance(self.seeds, list | tuple) else (self.seeds,)
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or \
                len(set(seeds)) != len(seeds):
            _fail("seeds", f"{self.seeds!r} must be a non-empty list of distinct integers")
        object.__setattr__(self, "seeds", seeds)
        object.__setattr__(self, "base", _overrides("base", self.base))
        for key in ("max_failures", "max_retries"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                _fail(key, f"{value!r} must be an integer >= 0")
        if self.storage is not None and not (isinstance(self.storage, str) and "://" in self.storage):
            _fail("storage", f"{self.storage!r} must be null (a journal file) or an SQLAlchemy URL such as "
                  "postgresql+psycopg://user:pass@host/db")
        record = (self.record,) if isinstance(self.record, str) else self.record
        if record is None:
            record = ()
        if not isinstance(record, list | tuple) or not all(isinstance(m, str) and m for m in record):
            _fail("record", f"{self.record!r} must be a list of MLflow metric names, e.g. [eval/niah/acc, "
                  "final/val_ppl]")
        object.__setattr__(self, "record", tuple(record))
        for kind in KINDS:
            present = getattr(self, kind) is not None
            if present != (kind == self.kind):
                _fail(kind, f"a {self.kind} sweep needs a '{self.kind}:' section and no other kind's section")

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> SweepSpec:
        if isinstance(data, Mapping) and "extends" in data:
            _fail("extends", "is resolved relative to the sweep file: load the file with SweepSpec.load(path)")
        data = _known_keys(cls, "", data)
        data.pop("source", None)
        if "name" not in data or "kind" not in data:
            _fail("name" if "name" not in data else "kind", "is required")
        if "objective" in data:
            data["objective"] = Objective(**_known_keys(Objective, "objective", data["objective"]))
        if "tracking" in data:
            data["tracking"] = Tracking(**_known_keys(Tracking, "tracking", data["tracking"]))
        if data.get("ablation") is not None:
            data["ablation"] = Ablation(**_known_keys(Ablation, "ablation", data["ablation"]))
        if data.get("hpo") is not None:
            hpo = _known_keys(Hpo, "hpo", data["hpo"])
            if "sampler" in hpo:
                hpo["sampler"] = Sampler(**_known_keys(Sampler, "hpo.sampler", hpo["sampler"]))
            if "pruner" in hpo:
                hpo["pruner"] = Pruner(**_known_keys(Pruner, "hpo.pruner", hpo["pruner"]))
            data["hpo"] = Hpo(**hpo)
        if data.get("scaling") is not None:
            scaling = _known_keys(Scaling, "scaling", data["scaling"])
            if "budgets" in scaling:
                scaling["budgets"] = Budgets(**_known_keys(Budgets, "scaling.budgets", scaling["budgets"]))
            data["scaling"] = Scaling(**scaling)
        try:
            return cls(**data, source=source)
        except TypeError as err:  # a wrongly typed value deep inside
            raise SweepSpecError(f"sweep: {err}") from None

    @classmethod
    def load(cls, path: str | Path) -> SweepSpec:
        path = Path(path)
        if not path.is_file():
            raise SweepSpecError(f"sweep file {path}: not found; sweeps live under sweeps/ (e.g. sweeps/tiny/*.yaml)")
        data = _read_extended(path, ())
        try:
            return cls.from_dict(data, source=str(path))
        except SweepSpecError as err:
            raise SweepSpecError(f"{path}: {err}") from None

    # ------------------------------------------------------------------ trials
    def fixed_trials(self) -> list[TrialPlan]:
        """The trials of an ablation (variants x seeds, baseline first) or a scaling sweep
        (sizes x attentions x budgets x seeds); empty for HPO."""
        plans: list[TrialPlan] = []
        if self.ablation is not None:
            for variant, overrides in self.ablation.variants.items():
                plans += [TrialPlan(variant, seed, overrides) for seed in self.seeds]
        elif self.scaling is not None:
            s = self.scaling
            for size in s.sizes:
                for attention in s.attentions:
                    for budget in s.budgets.values:
                        variant = f"{size}-{attention}-{s.budgets.kind}{budget:g}"
                        overrides = (f"model={size}", f"attention={attention}", *s.budgets.override(budget))
                        plans += [TrialPlan(variant, seed, overrides) for seed in self.seeds]
        return plans

    @property
    def baseline(self) -> str | None:
        """The first ablation variant (reports compare against it)."""
        return next(iter(self.ablation.variants)) if self.ablation else None
