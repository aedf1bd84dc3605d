"""Statistics over seeds: mean ± std, and the paired bootstrap CI of a variant's delta against the baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

HIGHER_IS_BETTER = ("acc", "tokens_per_s", "mfu", "throughput")


def lower_is_better(metric: str) -> bool:
    return not any(word in metric for word in HIGHER_IS_BETTER)


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (ddof=1); NaN for one seed
    n: int


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if x.size == 0:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan, int(x.size))


@dataclass(frozen=True)
class DeltaCI:
    """variant - baseline over matched seeds: mean delta, relative delta (% of the baseline mean) and the
    percentile bootstrap CI of both (NaN bounds with fewer than 2 pairs)."""

    delta: float
    rel_pct: float
    lo: float
    hi: float
    rel_lo: float
    rel_hi: float
    n_pairs: int
    level: float

    @property
    def crosses_zero(self) -> bool:
        """True when the CI holds 0 (or there is no CI): the delta is not resolved at this number of seeds."""
        return not (self.lo > 0 or self.hi < 0)


def paired_bootstrap(baseline: Mapping[str, float], variant: Mapping[str, float], *, n_boot: int = 10000,
                     seed: int = 0, level: float = 0.95) -> DeltaCI | None:
    """Bootstrap over seeds present (and finite) in both: resample the seed pairs, take the mean difference.

    The relative delta of one resample is its mean difference over its baseline mean, so both CIs come from
    the same resamples. None when no seed is shared.
    """
    seeds = sorted(s for s in set(baseline) & set(variant)
                   if math.isfinite(baseline[s]) and math.isfinite(variant[s]))
    if not seeds:
        return None
    b = np.array([baseline[s] for s in seeds], dtype=float)
    v = np.array([variant[s] for s in seeds], dtype=float)
    delta, rel = float((v - b).mean()), float(100 * (v - b).mean() / b.mean())
    if len(seeds) < 2:
        nan = math.nan
        return DeltaCI(delta, rel, nan, nan, nan, nan, len(seeds), level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    d = (v[idx] - b[idx]).mean(axis=1)
    r = 100 * d / b[idx].mean(axis=1)
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    lo, hi = np.percentile(d, q)
    rlo, rhi = np.percentile(r, q)
    return DeltaCI(delta, rel, float(lo), float(hi), float(rlo), float(rhi), len(seeds), level)


def relative_pct(value: float, reference: float) -> float:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return 100 * (value - reference) / reference
