"""HPO search spaces: Hydra's sweep grammar (`interval`, `tag(log, ...)`, `choice`, `range`) parsed by Hydra's own
override parser into Optuna distributions, and sampled values written back as Hydra overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from mta_lab.sweep.spec import Hpo, SweepSpecError

_SCALARS = (str, int, float, bool, type(None))
_TAGS = {"log", "int"}


def parse_value(key: str, expr: Any) -> BaseDistribution:
    """One search-space entry, e.g. `optim.lr: tag(log, interval(1e-4, 1e-2))`, as an Optuna distribution."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    hint = ("write interval(LOW, HIGH), tag(log, interval(LOW, HIGH)), choice(A, B, ...) or range(START, STOP[, STEP]) "
            "in Hydra's sweep grammar")
    if not isinstance(expr, str | int | float) or isinstance(expr, bool):
        raise SweepSpecError(f"sweep.hpo.space.{key}: {expr!r} is not a sweep expression; {hint}")
    try:
        override = OverridesParser.create().parse_overrides([f"{key}={expr}"])[0]
    except HydraException as err:
        raise SweepSpecError(f"sweep.hpo.space.{key}: cannot parse {expr!r} ({' '.join(str(err).split())}); "
                             f"{hint}") from None
    value = override.value()
    tags = set(getattr(value, "tags", ()) or ())
    if tags - _TAGS:
        raise SweepSpecError(f"sweep.hpo.space.{key}: unknown tag(s) {', '.join(sorted(tags - _TAGS))} in {expr!r}; "
                             "supported tags: log, int")
    log = "log" in tags
    try:
        if isinstance(value, IntervalSweep):
            if "int" in tags:
                return IntDistribution(int(value.start), int(value.end), log=log)
            return FloatDistribution(float(value.start), float(value.end), log=log)
        if isinstance(value, RangeSweep):
            values = list(_range_values(value.start, value.stop, value.step))
            if not values:
                raise ValueError(f"range({value.start}, {value.stop}, {value.step}) is empty")
            if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
                return IntDistribution(values[0], values[-1], step=value.step, log=log)
            if log:
                raise ValueError("tag(log, ...) applies to interval(...) or an integer range(...)")
            return CategoricalDistribution(values)
        if isinstance(value, ChoiceSweep):
            if log:
                raise ValueError("tag(log, ...) does not apply to choice(...)")
            if not all(isinstance(v, _SCALARS) for v in value.list):
                raise ValueError("choice(...) options must be plain values (numbers, strings, true/false, null)")
            return CategoricalDistribution(list(value.list))
    except ValueError as err:
        raise SweepSpecError(f"sweep.hpo.space.{key}: {expr!r}: {err}") from None
    raise SweepSpecError(f"sweep.hpo.space.{key}: {expr!r} is a single value, not a search space; {hint} "
                         f"(or put {key}={expr} in the sweep's base)")


def _range_values(start: float, stop: float, step: float):
    """Like Python's range, for floats too (a value within rounding error of `stop` is excluded)."""
    if step == 0:
        return
    ints = all(isinstance(v, int) for v in (start, stop, step))
    i = 0
    while True:
        value = start + i * step
        if (value >= stop - 1e-9 * abs(step)) if step > 0 else (value <= stop + 1e-9 * abs(step)):
            return
        yield value if ints else round(value, 12)
        i += 1


def parse_space(space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """The whole `hpo.space` mapping as Optuna distributions (key order kept)."""
    return {key: parse_value(key, expr) for key, expr in space.items()}


def to_override(key: str, value: Any) -> str:
    """A sampled value as a Hydra override `key=value` (strings quoted when Hydra would not read them back)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"


def build_sampler(hpo: Hpo, space: Mapping[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
    s = hpo.sampler
    try:
        if s.name == "tpe":
            return optuna.samplers.TPESampler(seed=s.seed, **s.options)
        if s.name == "random":
            return optuna.samplers.RandomSampler(seed=s.seed, **s.options)
        if s.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=s.seed, **s.options)
        if s.name == "qmc":
            return optuna.samplers.QMCSampler(seed=s.seed, **s.options)
        grid = {}
        for key, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise SweepSpecError(f"sweep.hpo.sampler: the grid sampler needs choice(...) or range(...) for every "
                                     f"parameter; {key} is a continuous interval")
        return optuna.samplers.GridSampler(grid, seed=s.seed, **s.options)
    except TypeError as err:
        raise SweepSpecError(f"sweep.hpo.sampler.options: {s.options!r} do not fit the {s.name} sampler "
                             f"({err})") from None


def build_pruner(hpo: Hpo) -> optuna.pruners.BasePruner:
    p = hpo.pruner
    classes = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
               "hyperband": optuna.pruners.HyperbandPruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
               "percentile": optuna.pruners.PercentilePruner}
    try:
        return classes[p.name](**p.options)
    except (TypeError, ValueError) as err:
        raise SweepSpecError(f"sweep.hpo.pruner.options: {p.options!r} do not fit the {p.name} pruner ({err})"
                             + ("; the percentile pruner needs {percentile: 25.0}" if p.name == "percentile" else "")
                             ) from None
