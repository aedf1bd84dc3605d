"""`mta-lab report evals`: the paper's eval figures per variant from the runs' `eval/*` metrics.

NIAH (`eval/niah/c<context>_n<needles>_d<depth>/acc`): accuracy heatmaps depth x context, one panel per needle
count and one row per variant (paper Figures 3 and 8), and accuracy vs needle count. BabiLong
(`eval/babilong/<qa>_len<length>/acc`): accuracy vs distraction length per task (Figure 5 left, Figure 7). Values
are means over the seeds (finished runs) of each variant. `eval_columns_table` adds eval metrics beside the
ablation table's metric, with the same paired bootstrap CIs against the baseline.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from mta_lab.report.collect import FINISHED, numeric
from mta_lab.report.errors import ReportError
from mta_lab.report.stats import paired_bootstrap, summarize
from mta_lab.report.table import NOT_RESOLVED, Table, fmt, fmt_ci, fmt_pm, fmt_signed

NIAH = re.compile(r"^metrics\.eval/niah/c(\d+)_n(\d+)_d([0-9.]+)/acc$")
BABILONG = re.compile(r"^metrics\.eval/babilong/(qa\d)_len(\d+)/acc$")


def eval_points(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long tables (variant, seed, setting..., acc) of NIAH and BabiLong from finished runs."""
    done = runs[runs["status"] == FINISHED]
    niah, bab = [], []
    for column in done.columns:
        if m := NIAH.match(column):
            for variant, seed, value in zip(done["variant"], done["seed"], numeric(done, column), strict=True):
                if pd.notna(value):
                    niah.append({"variant": variant, "seed": seed, "context": int(m[1]), "needles": int(m[2]),
                                 "depth": float(m[3]), "acc": value})
        elif m := BABILONG.match(column):
            for variant, seed, value in zip(done["variant"], done["seed"], numeric(done, column), strict=True):
                if pd.notna(value):
                    bab.append({"variant": variant, "seed": seed, "qa": m[1], "length": int(m[2]), "acc": value})
    return (pd.DataFrame(niah, columns=["variant", "seed", "context", "needles", "depth", "acc"]),
            pd.DataFrame(bab, columns=["variant", "seed", "qa", "length", "acc"]))


def niah_table(points: pd.DataFrame) -> Table:
    mean = points.groupby(["variant", "context", "needles"])["acc"].mean().reset_index()
    wide = mean.pivot_table(index="variant", columns=["context", "needles"], values="acc")
    wide.columns = [f"ctx {c} / {n} needles" for c, n in wide.columns]
    seeds = points.groupby("variant")["seed"].nunique()
    display = wide.map(lambda v: fmt(100 * v, 1)).reset_index()
    display.insert(1, "seeds", [str(seeds[v]) for v in display["variant"]])
    return Table("niah", "Needle in a haystack: accuracy % (mean over depths and seeds)", display,
                 wide.reset_index(), set(), ["Exact match of the asked needle's number; greedy decoding."])


def babilong_table(points: pd.DataFrame) -> Table:
    mean = points.groupby(["variant", "qa", "length"])["acc"].mean().reset_index()
    wide = mean.pivot_table(index=["variant", "qa"], columns="length", values="acc")
    wide.columns = [f"{n} tokens" for n in wide.columns]
    display = wide.map(lambda v: fmt(100 * v, 1)).reset_index()
    return Table("babilong", "BabiLong: accuracy % per task and distraction length (mean over seeds)", display,
                 wide.reset_index(), set(), ["First word of the greedy answer equals the bAbI answer."])


def niah_heatmaps(points: pd.DataFrame):
    from mta_lab.report.plots import plt

    variants, counts = sorted(points["variant"].unique()), sorted(points["needles"].unique())
    fig, axes = plt.subplots(len(variants), len(counts), figsize=(3.2 * len(counts) + 1, 2.6 * len(variants) + 0.6),
                             squeeze=False)
    image = None
    for i, variant in enumerate(variants):
        for j, n in enumerate(counts):
            ax = axes[i][j]
            cell = points[(points["variant"] == variant) & (points["needles"] == n)]
            grid = cell.groupby(["depth", "context"])["acc"].mean().unstack("context").sort_index()
            image = ax.imshow(grid.values, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
            ax.set_yticks(range(len(grid.index)), [f"{d:g}" for d in grid.index])
            for (y, x), v in pd.DataFrame(grid.values).stack().items():
                ax.text(x, y, f"{100 * v:.0f}", ha="center", va="center", fontsize=7)
            ax.set_title(f"{variant}: {n} needle{'s' if n > 1 else ''}", fontsize=9)
            if j == 0:
                ax.set_ylabel("depth")
            if i == len(variants) - 1:
                ax.set_xlabel("context (tokens)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy")
    return fig


def niah_vs_needles(points: pd.DataFrame):
    from mta_lab.report.plots import plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, group in points.groupby("variant"):
        series = group.groupby("needles")["acc"].mean()
        ax.plot(series.index, 100 * series.values, marker="o", label=variant)
    ax.set(xlabel="needles", ylabel="accuracy % (mean over contexts, depths, seeds)", ylim=(-3, 103),
           title="Needle in a haystack: accuracy vs needle count")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def babilong_figure(points: pd.DataFrame):
    from mta_lab.report.plots import plt

    tasks = sorted(points["qa"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 0.5, 3.4), squeeze=False, sharey=True)
    for ax, qa in zip(axes[0], tasks, strict=True):
        for variant, group in points[points["qa"] == qa].groupby("variant"):
            series = group.groupby("length")["acc"].mean()
            ax.plot(series.index, 100 * series.values, marker="o", label=variant)
        ax.set(title=qa, xlabel="distraction (tokens)", ylim=(-3, 103))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("accuracy %")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def eval_columns_table(runs: pd.DataFrame, metrics: list[str], baseline: str, *, n_boot: int = 10000,
                       seed: int = 0) -> Table:
    """One row per variant, for each metric: mean ± std over finished seeds and Δ vs the baseline [paired CI]."""
    ok = runs[runs["status"] == FINISHED]
    missing = [m for m in metrics if f"metrics.{m}" not in ok or numeric(ok, f"metrics.{m}").isna().all()]
    if missing:
        have = sorted(c.removeprefix("metrics.") for c in ok.columns if c.startswith("metrics.eval/")
                      and c.count("/") == 2)
        raise ReportError(f"--metrics: no finished run has {', '.join(missing)}; eval summaries these runs have: "
                          f"{', '.join(have) or 'none'} (run `mta-lab eval TASK ckpt=RUN_DIR` first)")
    variants = [baseline] + sorted(v for v in ok["variant"].unique() if v != baseline)
    shown, data = [], []
    for variant in variants:
        v_ok = ok[ok["variant"] == variant]
        row_shown, row = {"variant": variant}, {"variant": variant}
        for metric in metrics:
            col = f"metrics.{metric}"
            values = dict(zip(v_ok["seed"].astype(str), numeric(v_ok, col), strict=True))
            values = {k: v for k, v in values.items() if pd.notna(v) and math.isfinite(v)}
            s = summarize(list(values.values()))
            row_shown[f"{metric} (n)"] = f"{fmt_pm(s.mean, s.std, 4)} ({s.n})"
            row |= {f"{metric}/mean": s.mean, f"{metric}/std": s.std, f"{metric}/n": s.n}
            if variant == baseline:
                row_shown[f"{metric} Δ [95% CI]"] = "baseline"
                continue
            base = ok[ok["variant"] == baseline]
            base_vals = {k: v for k, v in zip(base["seed"].astype(str), numeric(base, col), strict=True)
                         if pd.notna(v) and math.isfinite(v)}
            with np.errstate(divide="ignore", invalid="ignore"):  # a baseline accuracy of 0: no relative delta
                ci = paired_bootstrap(base_vals, values, n_boot=n_boot, seed=seed) if values and base_vals else None
            if ci is None:
                row_shown[f"{metric} Δ [95% CI]"] = "no seed shared with the baseline"
                continue
            mark = f" {NOT_RESOLVED}" if ci.crosses_zero else ""
            row_shown[f"{metric} Δ [95% CI]"] = f"{fmt_signed(ci.delta, 4)} {fmt_ci(ci.lo, ci.hi, 4)}{mark}"
            row |= {f"{metric}/delta": ci.delta, f"{metric}/ci_lo": ci.lo, f"{metric}/ci_hi": ci.hi}
        shown.append(row_shown)
        data.append(row)
    return Table("eval_columns", f"Eval metrics vs {baseline}", pd.DataFrame(shown), pd.DataFrame(data), set(),
                 ["mean ± std over finished seeds (n); Δ = variant − baseline over seeds run by both, paired bootstrap "
                  f"95% CI ({n_boot} resamples, seed {seed}); {NOT_RESOLVED}: the CI holds 0."])


def evals_report(query, *, name: str | None = None):
    """Tables and figures of NIAH and BabiLong per variant (whichever the runs have)."""
    from mta_lab.report.build import _meta, default_name
    from mta_lab.report.collect import collect_runs, eval_runs_note
    from mta_lab.report.table import Report

    runs = collect_runs(query)
    niah, bab = eval_points(runs)
    if niah.empty and bab.empty:
        raise ReportError(f"none of the {len(runs)} runs of {query.describe()} has NIAH or BabiLong metrics "
                          "(eval/niah/..., eval/babilong/...); run `mta-lab eval niah ckpt=RUN_DIR` (or babilong) "
                          "first")
    tables, figures = [], {}
    if not niah.empty:
        tables.append(niah_table(niah))
        figures["niah_heatmaps"] = (niah_heatmaps(niah), "NIAH accuracy, depth × context, per needle count "
                                    "(rows: variants; mean over seeds)")
        figures["niah_needles"] = (niah_vs_needles(niah), "NIAH accuracy vs needle count")
    if not bab.empty:
        tables.append(babilong_table(bab))
        figures["babilong"] = (babilong_figure(bab), "BabiLong accuracy vs distraction length per task")
    report = Report(name or default_name("evals", query), "evals", f"Eval report: {query.describe()}", tables,
                    figures, meta=_meta(query, runs))
    done = runs[runs["status"] == FINISHED]
    report.notes.append(f"{len(done)} finished runs from MLflow {query.uri}; variants: "
                        f"{', '.join(sorted(done['variant'].unique()))}.")
    if note := eval_runs_note(runs):
        report.notes.append(note)
    return report
