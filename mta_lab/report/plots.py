"""Figures (matplotlib, Agg): scaling laws on log-log axes, training/validation curves, MTA kernel heatmaps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mta_lab.report.scaling import PowerLawFit  # noqa: E402

AXIS_LABELS = {"compute": "training compute C = FLOPs/token × tokens (FLOPs)", "params": "parameters"}


def scaling_figure(points: pd.DataFrame, fits: dict, axis: str, metric: str):
    """Loss vs `axis` per family (log-log), fitted curves where a fit exists, residuals below."""
    fig, (ax, res_ax) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (family, group) in enumerate(points.groupby("family")):
        color = colors[i % len(colors)]
        ax.scatter(group[axis], group["loss"], color=color, s=22, alpha=0.8, label=f"{family} (runs)")
        fit = fits.get(family)
        if isinstance(fit, PowerLawFit):
            xs = np.logspace(np.log10(group[axis].min()) - 0.1, np.log10(group[axis].max()) + 0.1, 100)
            lo, hi = fit.ci.get("alpha", (np.nan, np.nan))
            ax.plot(xs, fit.predict(xs), color=color,
                    label=f"{family}: {fit.E:.3g} + {fit.A:.3g}·x^(−{fit.alpha:.3f}) [α CI {lo:.3f}, {hi:.3f}]")
            res_ax.scatter(group[axis], fit.residuals, color=color, s=16)
    ax.set(xscale="log", yscale="log", ylabel=f"{metric} (nats/token)" if "loss" in metric else metric,
           title=f"{metric} vs {AXIS_LABELS[axis].split(' =')[0]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    res_ax.axhline(0, color="grey", lw=0.8)
    res_ax.set(xscale="log", xlabel=AXIS_LABELS[axis], ylabel="residual (loss − fit)")
    res_ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def curves_figure(history: pd.DataFrame, labels: dict[str, str], x_label: str = "optimizer step"):
    """Every (run, metric) history on one plot: colour per run, line style per metric."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    keys = list(dict.fromkeys(history["key"]))
    for i, run_id in enumerate(dict.fromkeys(history["run_id"])):
        for j, key in enumerate(keys):
            h = history[(history["run_id"] == run_id) & (history["key"] == key)]
            if not h.empty:
                ax.plot(h["step"], h["value"], styles[j % len(styles)], color=colors[i % len(colors)],
                        marker="o" if len(h) < 10 else None, ms=3, label=f"{labels.get(run_id, run_id[:8])} · {key}")
    ax.set(xlabel=x_label, ylabel=" / ".join(keys) + (" (nats/token)" if all("loss" in k for k in keys) else ""),
           title="training and validation curves")
    if all("loss" in k or "ppl" in k for k in keys):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def toy_curves_figure(cells: pd.DataFrame, history: pd.DataFrame, key: str = "val/error_rate"):
    """Table 1's columns as panels (rows N, columns answer variant): `key` vs step (error rates in %),
    Transformer and MTA, each seed thin and the mean over seeds (at steps all seeds reached) thick."""
    percent = key.endswith("error_rate")
    colors = {"Transformer": "tab:blue", "MTA": "tab:orange"}
    ns = sorted(cells["N"].unique())
    variants = [v for v in ("all", "first", "last") if v in set(cells["variant"])]
    fig, axes = plt.subplots(len(ns), len(variants), figsize=(3.6 * len(variants), 2.8 * len(ns) + 0.4),
                             squeeze=False, sharex=True, sharey=True)
    val = history[history["key"] == key]
    factor = 100 if percent else 1
    for r, n in enumerate(ns):
        for c, variant in enumerate(variants):
            ax = axes[r][c]
            for model, color in colors.items():
                ids = cells[(cells["N"] == n) & (cells["variant"] == variant) & (cells["model"] == model)]["run_id"]
                curves = val[val["run_id"].isin(ids)].pivot_table(index="step", columns="run_id", values="value")
                if curves.empty:
                    continue
                for run_id in curves:
                    ax.plot(curves.index, factor * curves[run_id], color=color, lw=0.8, alpha=0.45)
                mean = factor * curves.dropna().mean(axis=1)
                ax.plot(mean.index, mean, color=color, lw=2.2, marker="o", ms=3,
                        label=f"{model} (n={curves.shape[1]})")
            ax.set_title(f"N={n} {variant.capitalize()}", fontsize=10)
            if percent:
                ax.set_ylim(-3, 103)
            ax.grid(True, alpha=0.3)
            if r == len(ns) - 1:
                ax.set_xlabel("optimizer step")
            if c == 0:
                ax.set_ylabel(f"{key} %" if percent else key)
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Toy task: {key} during training")
    fig.tight_layout()
    return fig


def kq_kernel_figure(layers, name: str, pad_key: str = "both"):
    """Figure 4 style: one heatmap per (layer, head) of the `name` kernel (kq_pre or kq_post)."""
    from mta_lab.attention.spec import key_center

    rows = [lk for lk in layers if getattr(lk, name) is not None]
    n_heads = getattr(rows[0], name).shape[0]
    vmax = max(float(np.abs(getattr(lk, name)).max()) for lk in rows) or 1.0
    c_q, c_k = getattr(rows[0], name).shape[1:]
    # Panels sized by the kernel (a 2x15 kernel is wide and flat); constrained layout keeps titles off tick labels.
    width, height = max(1.8, 0.25 * c_k + 0.6), max(1.2, 0.3 * c_q + 0.9)
    fig, axes = plt.subplots(len(rows), n_heads, figsize=(width * n_heads + 1.5, height * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    for r, lk in enumerate(rows):
        k = getattr(lk, name)
        c_q, c_k = k.shape[1:]
        centre = key_center(c_k, pad_key)
        for h in range(n_heads):
            ax = axes[r, h]
            im = ax.imshow(k[h], cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
            ax.set_xticks(range(c_k), [str(b - centre) for b in range(c_k)], fontsize=6)
            ax.set_yticks(range(c_q), [str(a - (c_q - 1)) for a in range(c_q)], fontsize=6)
            ax.set_title(f"layer {lk.layer} · head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel("query offset", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("key offset", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8, label="kernel weight")
    fig.suptitle(f"{name.replace('_', ' ')} key-query kernels (0,0 = same query and key; identity init = 1 there)")
    return fig


def head_mixing_figure(layers):
    """Per layer: the pre-softmax (H×H) and post-softmax (block-diagonal H×H) head-mixing matrices."""
    kinds = [k for k in ("head_pre", "head_post") if any(getattr(lk, k) is not None for lk in layers)]
    rows = [lk for lk in layers if any(getattr(lk, k) is not None for k in kinds)]
    if not kinds:
        return None
    vmax = max(float(np.abs(getattr(lk, k)).max()) for lk in rows for k in kinds if getattr(lk, k) is not None)
    fig, axes = plt.subplots(len(kinds), len(rows), figsize=(2.2 * len(rows) + 1.5, 2.2 * len(kinds) + 1),
                             squeeze=False)
    im = None
    for c, lk in enumerate(rows):
        for r, kind in enumerate(kinds):
            ax, m = axes[r, c], getattr(lk, kind)
            if m is None:
                ax.axis("off")
                continue
            im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_title(f"layer {lk.layer} · {kind.replace('_', ' ')}", fontsize=8)
            ax.set_xlabel("input head", fontsize=7)
            ax.set_ylabel("output head", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes, shrink=0.8, label="mixing weight")
    fig.suptitle("head-mixing matrices (identity init)")
    return fig


def ablation_figure(table_data: pd.DataFrame, runs: pd.DataFrame, metric: str):
    """Per variant: each seed's value (dots) and the mean ± std (bar), baseline first."""
    from mta_lab.report.collect import numeric

    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(table_data) + 2), 4.5))
    values = numeric(runs, f"metrics.{metric}")
    for i, row in enumerate(table_data.itertuples()):
        seeds = values[(runs["variant"] == row.variant) & (runs["status"] == "FINISHED")].dropna()
        ax.scatter(np.full(len(seeds), i), seeds, color="grey", s=16, zorder=3, label="one seed" if i == 0 else None)
        ax.errorbar(i, row.mean, yerr=0 if np.isnan(row.std) else row.std, fmt="s", color="C0" if i else "C3",
                    capsize=5, label=("baseline mean ± std" if i == 0 else ("mean ± std" if i == 1 else None)))
    ax.set_xticks(range(len(table_data)), table_data["variant"], rotation=30, ha="right")
    ax.set(xlabel="variant", ylabel=f"{metric}" + (" (nats/token)" if "loss" in metric else ""),
           title=f"{metric} per variant over seeds")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
