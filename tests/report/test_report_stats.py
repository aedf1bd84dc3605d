"""Report statistics and fits on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mta_lab.report.scaling import NoFit, PowerLawFit, fit_power_law
from mta_lab.report.stats import lower_is_better, paired_bootstrap, summarize


def test_summarize_mean_and_sample_std():
    s = summarize([1.0, 2.0, 3.0, float("nan")])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    one = summarize([4.0])
    assert one.mean == 4.0 and math.isnan(one.std) and one.n == 1


def test_paired_bootstrap_constant_shift_is_exact():
    base = {"0": 3.0, "1": 3.5, "2": 2.9}
    ci = paired_bootstrap(base, {k: v - 0.1 for k, v in base.items()}, n_boot=500)
    assert ci.delta == pytest.approx(-0.1) and ci.lo == pytest.approx(-0.1) and ci.hi == pytest.approx(-0.1)
    assert ci.rel_pct == pytest.approx(-10 / np.mean(list(base.values())))
    assert not ci.crosses_zero and ci.n_pairs == 3


def test_paired_bootstrap_matches_the_normal_ci_and_pairs_by_seed():
    rng = np.random.default_rng(3)
    base = {str(i): 5 + rng.normal() for i in range(400)}  # large between-seed spread, removed by pairing
    diffs = 0.05 + 0.02 * rng.standard_normal(400)
    variant = {k: base[k] + d for k, d in zip(base, diffs, strict=True)}
    variant["extra"] = 100.0  # a seed the baseline lacks is ignored
    ci = paired_bootstrap(base, variant, n_boot=4000, seed=1)
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(400)
    assert ci.n_pairs == 400 and ci.delta == pytest.approx(diffs.mean())
    assert ci.lo == pytest.approx(diffs.mean() - half, abs=0.2 * half)
    assert ci.hi == pytest.approx(diffs.mean() + half, abs=0.2 * half)
    assert ci.lo > 0 and not ci.crosses_zero
    again = paired_bootstrap(base, variant, n_boot=4000, seed=1)
    assert (again.lo, again.hi) == (ci.lo, ci.hi)  # seeded


def test_paired_bootstrap_noise_only_crosses_zero_and_one_pair_has_no_ci():
    rng = np.random.default_rng(0)
    base = {str(i): 3 + rng.normal() for i in range(6)}
    variant = {k: v + 0.5 * rng.standard_normal() for k, v in base.items()}
    variant = {k: v - np.mean([variant[j] - base[j] for j in base]) for k, v in variant.items()}  # mean diff 0
    assert paired_bootstrap(base, variant, n_boot=2000).crosses_zero
    single = paired_bootstrap({"0": 1.0}, {"0": 2.0, "1": 0.0})
    assert single.n_pairs == 1 and math.isnan(single.lo) and single.crosses_zero
    assert paired_bootstrap({"0": 1.0}, {"1": 1.0}) is None


def test_metric_direction():
    assert lower_is_better("final/val_loss") and lower_is_better("final/val_error_rate")
    assert not lower_is_better("final/tokens_per_s")


def test_power_law_recovered_within_its_ci():
    E, A, alpha = 1.8, 3.0e3, 0.25
    rng = np.random.default_rng(1)
    C = np.repeat(np.logspace(14, 19, 8), 3)
    y = (E + A * C ** -alpha) * (1 + 0.01 * rng.standard_normal(C.size))
    fit = fit_power_law(C, y, n_boot=200, seed=0)
    assert isinstance(fit, PowerLawFit)
    assert fit.ci["alpha"][0] <= alpha <= fit.ci["alpha"][1]
    assert fit.ci["E"][0] <= E <= fit.ci["E"][1]
    assert fit.alpha == pytest.approx(alpha, rel=0.1) and fit.E == pytest.approx(E, rel=0.05)
    assert fit.residuals.shape == C.shape and fit.rmse < 0.05
    assert fit.compute_for_loss(float(fit.predict(1e16))) == pytest.approx(1e16, rel=1e-6)
    assert fit.compute_for_loss(E - 0.1) == math.inf


def test_power_law_with_an_outlier_stays_close():
    E, A, alpha = 2.0, 50.0, 0.3
    x = np.logspace(6, 9, 10)
    y = E + A * x ** -alpha
    y[4] += 1.0  # one bad run
    fit = fit_power_law(x, y, n_boot=50)
    assert fit.alpha == pytest.approx(alpha, rel=0.1)


def test_too_few_points_gives_no_fit_with_a_reason():
    x = np.repeat([1e15, 1e16, 1e17], 3)
    fit = fit_power_law(x, 2 + 10 * x ** -0.1)
    assert isinstance(fit, NoFit) and "3 distinct" in fit.reason and "need ≥ 4" in fit.reason
