"""The ablation table: one row per variant, baseline first, deltas against it with paired bootstrap CIs."""

from __future__ import annotations

import math
import re

import pandas as pd

from mta_lab.report.collect import FINISHED, numeric
from mta_lab.report.errors import ReportError
from mta_lab.report.stats import lower_is_better, paired_bootstrap, relative_pct, summarize
from mta_lab.report.table import CHECK, CROSS, NOT_RESOLVED, Table, fmt_ci, fmt_pm, fmt_signed

TABLE5_NAMES = re.compile(r"^(t5_.+|mta|transformer)$")
INIT_PPL = "metrics.init/parent_val_ppl"
TABLE5_COLUMNS = ("kq pre", "kq post", "head pre", "head post", "group norm")


def choose_baseline(runs: pd.DataFrame, baseline: str | None) -> tuple[str, str]:
    """(baseline variant, why it was chosen). Without --baseline: the variant of the sweep's first trial (sweeps
    queue the baseline first), else 'transformer' when present, else the first variant by name."""
    variants = sorted(runs["variant"].unique())
    if baseline is not None:
        if baseline not in variants:
            raise ReportError(f"--baseline {baseline!r} is not among the variants of these runs: {', '.join(variants)}")
        return baseline, "given with --baseline"
    trials = pd.to_numeric(runs["trial"], errors="coerce")
    if trials.notna().any():
        return str(runs.loc[trials.idxmin(), "variant"]), "the sweep's first trial (sweeps queue the baseline first)"
    if "transformer" in variants:
        return "transformer", "the 'transformer' variant"
    return variants[0], "the first variant by name (no sweep trial numbers; set one with --baseline)"


def _seed_values(runs: pd.DataFrame, column: str) -> dict[str, float]:
    return dict(zip(runs["seed"].astype(str), numeric(runs, column), strict=True))


def _component_marks(runs: pd.DataFrame) -> dict[str, str]:
    """✓/× per Table 5 component from the run's logged attention.* params."""
    first = runs.iloc[0]

    def on(key: str, off: tuple[str, ...]) -> str:
        value = str(first.get(f"params.attention.{key}", "None"))
        return CROSS if value in off else CHECK

    return {"kq pre": on("kq_pre", ("None", "null")), "kq post": on("kq_post", ("None", "null")),
            "head pre": on("head_pre", ("False", "false", "None")), "head post": on("head_post", ("none", "None")),
            "group norm": on("group_norm", ("none", "None"))}


def ablation_table(runs: pd.DataFrame, metric: str, baseline: str | None = None, *, n_boot: int = 10000,
                   seed: int = 0, level: float = 0.95) -> Table:
    """`runs`: every run of the ablation (any status). Rows are variants; only FINISHED runs with a finite metric
    enter the statistics; the others are counted as failed/diverged seeds."""
    base, why = choose_baseline(runs, baseline)
    col = f"metrics.{metric}"
    ok = runs[(runs["status"] == FINISHED) & numeric(runs, col).notna()
              & numeric(runs, col).apply(lambda v: math.isfinite(v) if pd.notna(v) else False)]
    base_runs = ok[ok["variant"] == base]
    if base_runs.empty:
        raise ReportError(f"the baseline {base!r} has no finished run with {metric!r}; choose another with --baseline")
    order = [base] + sorted(v for v in runs["variant"].unique() if v != base)
    table5 = all(TABLE5_NAMES.match(str(a)) for a in runs["attention"].unique())
    lower = lower_is_better(metric)
    base_vals = _seed_values(base_runs, col)
    base_params = numeric(base_runs, "metrics.final/params").mean()
    base_flops = numeric(base_runs, "metrics.final/flops_per_token").mean()
    base_tps = numeric(base_runs, "metrics.final/tokens_per_s").mean()

    inits = INIT_PPL in runs.columns and numeric(runs, INIT_PPL).notna().any()  # runs started with init_from
    rows, shown = [], []
    for variant in order:
        v_all, v_ok = runs[runs["variant"] == variant], ok[ok["variant"] == variant]
        s = summarize(numeric(v_ok, col).tolist())
        ci = paired_bootstrap(base_vals, _seed_values(v_ok, col), n_boot=n_boot, seed=seed, level=level) \
            if variant != base and not v_ok.empty else None
        failed = v_all[v_all["status"] != FINISHED]
        diverged = len(v_all) - len(failed) - len(v_ok)
        row = {"variant": variant, "attention": v_all["attention"].iloc[0], "is_baseline": variant == base,
               "n_seeds": s.n, "seeds": ",".join(v_ok["seed"].astype(str)), "mean": s.mean, "std": s.std,
               "delta": ci.delta if ci else math.nan, "delta_pct": ci.rel_pct if ci else math.nan,
               "ci_lo": ci.lo if ci else math.nan, "ci_hi": ci.hi if ci else math.nan,
               "ci_pct_lo": ci.rel_lo if ci else math.nan, "ci_pct_hi": ci.rel_hi if ci else math.nan,
               "n_pairs": ci.n_pairs if ci else 0, "ci_crosses_zero": ci.crosses_zero if ci else None,
               "params": numeric(v_ok, "metrics.final/params").mean(),
               "params_delta_pct": relative_pct(numeric(v_ok, "metrics.final/params").mean(), base_params),
               "flops_per_token_delta_pct": relative_pct(numeric(v_ok, "metrics.final/flops_per_token").mean(),
                                                         base_flops),
               "throughput_ratio": numeric(v_ok, "metrics.final/tokens_per_s").mean() / base_tps
               if base_tps and math.isfinite(base_tps) else math.nan,
               "failed": len(failed), "diverged": diverged,
               "failed_runs": ",".join(f"{r.run_name}:{r.status}" for r in failed.itertuples())}
        if table5:
            row |= _component_marks(v_all)
        if inits:
            row |= {"parent_val_ppl": numeric(v_ok, INIT_PPL).mean(),
                    "step0_val_ppl": numeric(v_ok, "metrics.init/val_ppl").mean()
                    if "metrics.init/val_ppl" in v_ok else math.nan,
                    "val_ppl": numeric(v_ok, "metrics.final/val_ppl").mean()
                    if "metrics.final/val_ppl" in v_ok else math.nan}
        rows.append(row)
        if variant == base:
            delta_cell = pct_cell = "baseline"
        elif ci is None:
            delta_cell = pct_cell = "no seed shared with the baseline"
        else:
            mark = f" {NOT_RESOLVED}" if ci.crosses_zero else ""
            delta_cell = f"{fmt_signed(ci.delta, 4)} {fmt_ci(ci.lo, ci.hi, 4)}{mark}"
            pct_cell = f"{fmt_signed(ci.rel_pct, 2, '%')} {fmt_ci(ci.rel_lo, ci.rel_hi, 2, '%')}{mark}"
        shown.append({"variant": variant, **({k: row[k] for k in TABLE5_COLUMNS} if table5 else {}),
                      "n": str(s.n), metric: fmt_pm(s.mean, s.std, 4),
                      "Δ [95% CI]": delta_cell, "Δ% [95% CI]": pct_cell,
                      "params Δ%": "—" if variant == base else fmt_signed(row["params_delta_pct"], 2, "%"),
                      "FLOPs/tok Δ%": "—" if variant == base else fmt_signed(row["flops_per_token_delta_pct"], 2, "%"),
                      "throughput ×": f"{row['throughput_ratio']:.2f}×" if math.isfinite(row["throughput_ratio"])
                      else "—",
                      **({"parent ppl": _ppl(row["parent_val_ppl"]), "step-0 ppl": _ppl(row["step0_val_ppl"]),
                          "ppl": _ppl(row["val_ppl"])} if inits else {}),
                      "failed/diverged": f"{len(failed)}/{diverged}"})
    data, display = pd.DataFrame(rows), pd.DataFrame(shown)
    means = data["mean"].where(data["n_seeds"] > 0)
    bold = set()
    if means.notna().any():
        best = means.idxmin() if lower else means.idxmax()
        bold.add((int(best), metric))
    notes = [f"Baseline: {base!r} ({why}). {metric}: mean ± std over seeds ({'lower' if lower else 'higher'} is "
             "better; best in bold). Δ = variant − baseline over seeds run by both, with a paired bootstrap "
             f"{int(level * 100)}% CI ({n_boot} resamples, seed {seed}); Δ% relative to the baseline mean.",
             f"{NOT_RESOLVED} the CI holds 0: not resolved from the baseline at this number of seeds.",
             "params/FLOPs per token from final/params and final/flops_per_token; throughput × = mean "
             "final/tokens_per_s over the baseline's (measured on whatever machine ran each run).",
             "failed/diverged: runs not FINISHED / finished without a finite value of the metric."]
    if inits:
        notes.append("parent ppl: the init_from parent's val/ppl on this run's validation data before any step "
                     "(init/parent_val_ppl); step-0 ppl: this model's, after inserting its layers (init/val_ppl); "
                     "ppl: final/val_ppl; means over seeds.")
    if table5:
        notes.append(f"Components (paper Table 5 layout) read from the runs' attention.* params: {CHECK} on, "
                     f"{CROSS} off.")
    return Table("ablation", f"Ablation: {metric} vs {base}", display, data, bold, notes)


def _ppl(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "—"
