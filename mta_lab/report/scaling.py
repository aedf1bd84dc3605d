"""Scaling-law fits L(x) = E + A·x^(-α) (x = training compute or parameters), robust and bootstrapped, and the
compute multiplier of a variant against the baseline at equal loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from mta_lab.report.collect import numeric

MIN_DISTINCT = 4


@dataclass(frozen=True)
class PowerLawFit:
    E: float
    A: float
    alpha: float
    ci: dict[str, tuple[float, float]]  # parameter -> (lo, hi), percentile bootstrap
    residuals: np.ndarray  # y - fit, per point in input order
    n_points: int
    n_distinct: int
    n_boot_ok: int

    def predict(self, x) -> np.ndarray:
        return self.E + self.A * np.asarray(x, dtype=float) ** (-self.alpha)

    def compute_for_loss(self, loss: float) -> float:
        """x at which the fit reaches `loss`; inf when the loss is at or below the fit's floor E."""
        if loss <= self.E:
            return math.inf
        return (self.A / (loss - self.E)) ** (1 / self.alpha)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))


@dataclass(frozen=True)
class NoFit:
    """Why no fit is shown (too few points, or the optimiser did not converge)."""

    reason: str
    n_points: int
    n_distinct: int
    residuals: np.ndarray = field(default_factory=lambda: np.array([]))


def _solve(logx: np.ndarray, y: np.ndarray, f_scale: float):
    """Best of several starts; parameters (E, log A', α) with x scaled to its geometric mean (x' = x/x0)."""
    best = None
    y_min = float(y.min())
    upper = [y_min, np.inf, 5.0]
    for alpha0 in (0.05, 0.2, 0.5, 1.0):
        for frac in (0.0, 0.5, 0.9):
            e0 = frac * y_min
            a0 = max(float(np.mean(y)) - e0, 1e-6)
            try:
                res = least_squares(lambda p: p[0] + np.exp(p[1] - p[2] * logx) - y, [e0, math.log(a0), alpha0],
                                    bounds=([0.0, -50.0, 1e-4], upper), loss="soft_l1", f_scale=f_scale,
                                    max_nfev=2000)
            except ValueError:
                continue
            if res.success and np.all(np.isfinite(res.x)) and (best is None or res.cost < best.cost):
                best = res
    return best


def fit_power_law(x, y, *, n_boot: int = 300, seed: int = 0, level: float = 0.95,
                  min_distinct: int = MIN_DISTINCT) -> PowerLawFit | NoFit:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    distinct = len(np.unique(x))
    if distinct < min_distinct:
        return NoFit(f"too few points for a fit: {distinct} distinct values of x ({len(x)} runs); "
                     f"need ≥ {min_distinct}",
                     len(x), distinct)
    x0 = float(np.exp(np.mean(np.log(x))))
    logx = np.log(x / x0)
    f_scale = max(0.01 * float(np.std(y)) if np.std(y) > 0 else 0.01, 1e-6)
    best = _solve(logx, y, f_scale)
    if best is None:
        return NoFit("the fit did not converge from any start", len(x), distinct)

    def params_of(p) -> tuple[float, float, float]:
        return float(p[0]), float(math.exp(p[1]) * x0 ** p[2]), float(p[2])

    E, A, alpha = params_of(best.x)
    if alpha <= 1e-3 or alpha >= 4.99:
        return NoFit(f"the fit ran to a bound (α = {alpha:.3g}): the points do not follow a power law", len(x),
                     distinct, y - (E + A * x ** (-alpha)))
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < 3:
            continue
        lx, yy = logx[idx], y[idx]
        res = least_squares(lambda p, lx=lx, yy=yy: p[0] + np.exp(p[1] - p[2] * lx) - yy,
                            np.clip(best.x, [0.0, -50.0, 1e-4], [float(yy.min()), 50.0, 5.0]),
                            bounds=([0.0, -50.0, 1e-4], [float(yy.min()), np.inf, 5.0]), loss="soft_l1",
                            f_scale=f_scale, max_nfev=2000)
        if res.success:
            samples.append(params_of(res.x))
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    ci = {}
    if samples:
        arr = np.array(samples)
        ci = {name: tuple(float(v) for v in np.percentile(arr[:, i], q)) for i, name in enumerate(("E", "A", "alpha"))}
    return PowerLawFit(E, A, alpha, ci, y - (E + A * x ** (-alpha)), len(x), distinct, len(samples))


def scaling_points(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per finished run: family (attention preset), size, compute C = FLOPs/token × tokens seen, params,
    loss. Tokens seen = final/steps × train.tokens_per_step (params logged by every run)."""
    tokens = numeric(runs, "metrics.final/steps") * numeric(runs, "params.train.tokens_per_step")
    flops = numeric(runs, "metrics.final/flops_per_token").fillna(numeric(runs, "params.flops_per_token"))
    params = numeric(runs, "metrics.final/params").fillna(numeric(runs, "params.model.params"))
    return pd.DataFrame({"run_id": runs["run_id"], "run_name": runs["run_name"], "family": runs["attention"],
                         "size": runs["size"], "seed": runs["seed"], "tokens": tokens, "compute": flops * tokens,
                         "params": params, "loss": numeric(runs, f"metrics.{metric}")}).reset_index(drop=True)


def compute_multipliers(points: pd.DataFrame, baseline_fit: PowerLawFit, baseline: str) -> pd.DataFrame:
    """Per family and compute budget: the compute the baseline's fit needs to reach the family's mean loss there,
    over the compute the family used (> 1: the family is that many times more compute-efficient)."""
    rows = []
    for (family, compute), group in points[points["family"] != baseline].groupby(["family", "compute"]):
        loss = float(group["loss"].mean())
        needed = baseline_fit.compute_for_loss(loss)
        rows.append({"family": family, "compute": compute, "mean_loss": loss, "baseline_compute": needed,
                     "multiplier": needed / compute})
    return pd.DataFrame(rows, columns=["family", "compute", "mean_loss", "baseline_compute", "multiplier"])
