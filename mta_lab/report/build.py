"""Assemble each kind of report (ablation, scaling, toy, curves, kernels) from MLflow runs or a checkpoint."""

from __future__ import annotations

import sys

import pandas as pd

from mta_lab.report.collect import RunQuery, collect_runs, finished_runs, metric_histories, require_metric
from mta_lab.report.errors import ReportError
from mta_lab.report.table import Report, Table, fmt


def _meta(query: RunQuery | None, runs: pd.DataFrame | None, **extra) -> dict:
    from mta_lab.tracking.mlflow_run import git_sha

    evals = [r for ids in runs["eval_runs"] for r in str(ids or "").split(",") if r] \
        if runs is not None and "eval_runs" in runs else []
    return {"query": query.to_dict() if query else None,
            "run_ids": list(runs["run_id"]) if runs is not None else [], "eval_run_ids": evals, "git_sha": git_sha(),
            "command": ["mta-lab", *sys.argv[1:]] if sys.argv and "mta" in sys.argv[0] else None, **extra}


def default_name(kind: str, query: RunQuery | None) -> str:
    return f"{kind}-{query.sweep}" if query and query.sweep else kind


def ablation_report(query: RunQuery, metric: str = "final/val_loss", baseline: str | None = None, *,
                    n_boot: int = 10000, seed: int = 0, name: str | None = None,
                    metrics: list[str] | None = None) -> Report:
    """`metrics`: eval metrics (e.g. eval/niah/acc) shown beside `metric` (report/evals.py), same paired CIs."""
    from mta_lab.report.ablation import ablation_table

    runs = collect_runs(query)
    require_metric(finished_runs(runs, query), metric)
    table = ablation_table(runs, metric, baseline, n_boot=n_boot, seed=seed)
    from mta_lab.report.plots import ablation_figure

    figure = (ablation_figure(table.data, runs, metric),
              f"{metric} per variant: seeds and mean ± std")
    report = Report(name or default_name("ablation", query), "ablation", f"Ablation report: {query.describe()}",
                    [table], {"ablation": figure},
                    meta=_meta(query, runs, metric=metric, baseline=baseline, n_boot=n_boot, seed=seed))
    report.notes.append(f"{len(runs)} runs ({(runs['status'] == 'FINISHED').sum()} finished) from MLflow "
                        f"{query.uri}.")
    from mta_lab.report.collect import eval_runs_note

    if note := eval_runs_note(runs):
        report.notes.append(note)
    if metrics:
        from mta_lab.report.evals import eval_columns_table

        base = str(table.data.loc[table.data["is_baseline"], "variant"].iloc[0])
        report.tables.append(eval_columns_table(runs, metrics, base, n_boot=n_boot, seed=seed))
        report.meta["metrics"] = metrics
    return report


def scaling_report(query: RunQuery, metric: str = "final/val_loss", baseline: str | None = None, *,
                   n_boot: int = 300, seed: int = 0, name: str | None = None) -> Report:
    from mta_lab.report.plots import scaling_figure
    from mta_lab.report.scaling import PowerLawFit, compute_multipliers, fit_power_law, scaling_points

    runs = collect_runs(query)
    done = require_metric(finished_runs(runs, query), metric)
    points = scaling_points(done, metric)
    families = sorted(points["family"].unique())
    base = baseline or ("transformer" if "transformer" in families else families[0])
    if base not in families:
        raise ReportError(f"--baseline {base!r} is not an attention family of these runs: {', '.join(families)}")
    fits, rows, figures, notes = {}, [], {}, []
    for axis in ("compute", "params"):
        fits[axis] = {f: fit_power_law(g[axis], g["loss"], n_boot=n_boot, seed=seed)
                      for f, g in points.groupby("family")}
        for family, fit in fits[axis].items():
            row = {"family": family, "x": axis, "runs": fit.n_points, "distinct x": fit.n_distinct}
            if isinstance(fit, PowerLawFit):
                ci = fit.ci.get("alpha", (float("nan"),) * 2)
                e_ci = fit.ci.get("E", (float("nan"),) * 2)
                row |= {"E": fmt(fit.E, 3), "E 95% CI": f"[{fmt(e_ci[0])}, {fmt(e_ci[1])}]", "A": fmt(fit.A, 3),
                        "α": fmt(fit.alpha, 4), "α 95% CI": f"[{fmt(ci[0], 4)}, {fmt(ci[1], 4)}]",
                        "RMSE": fmt(fit.rmse, 4)}
            else:
                row |= {"E": "—", "E 95% CI": "—", "A": "—", "α": "—", "α 95% CI": "—", "RMSE": "—"}
                notes.append(f"{family} vs {axis}: no fit shown: {fit.reason}.")
            rows.append(row)
        figures[f"scaling_{axis}"] = (scaling_figure(points, fits[axis], axis, metric),
                                      f"{metric} vs {axis} (log-log) with fits L = E + A·x^(−α); residuals below")
    fit_display = pd.DataFrame(rows)
    fit_table = Table("fits", f"Power-law fits of {metric}", fit_display, fit_display.copy(), set(), [
        "L(x) = E + A·x^(−α) per attention family, scipy least_squares (soft_l1 loss, 12 starts); 95% CIs from "
        f"{n_boot} bootstrap resamples of the runs. x = compute: final/flops_per_token × tokens seen (final/steps × "
        "train.tokens_per_step); x = params: final/params.", *notes])
    tables = [fit_table]
    base_fit = fits["compute"].get(base)
    if isinstance(base_fit, PowerLawFit):
        mult = compute_multipliers(points, base_fit, base)
        shown = mult.assign(compute=mult["compute"].map(lambda v: fmt(v, 3)),
                            mean_loss=mult["mean_loss"].map(lambda v: fmt(v, 4)),
                            baseline_compute=mult["baseline_compute"].map(lambda v: fmt(v, 3)),
                            multiplier=mult["multiplier"].map(lambda v: f"{v:.2f}×" if v < float("inf")
                                                              else "baseline never reaches it"))
        tables.append(Table("multipliers", f"Compute multiplier vs {base} at equal loss", shown, mult, set(), [
            f"Compute the {base} fit needs to reach each family's mean loss at a budget, over that budget "
            "(> 1×: the family reaches the loss with less compute)."]))
    else:
        fit_table.notes.append(f"No compute multipliers: the baseline {base!r} has no compute fit.")
    resid = points.copy()
    for axis in ("compute", "params"):
        resid[f"residual_{axis}"] = float("nan")
        for family, fit in fits[axis].items():
            if isinstance(fit, PowerLawFit):
                idx = resid.index[(resid["family"] == family) & resid[axis].gt(0) & resid["loss"].notna()]
                resid.loc[idx, f"residual_{axis}"] = fit.residuals
    tables.append(Table("points", "Runs and residuals", resid.drop(columns=["run_id"]).map(
        lambda v: fmt(v, 4) if isinstance(v, float) else str(v)), resid, set(), []))
    return Report(name or default_name("scaling", query), "scaling", f"Scaling report: {query.describe()}", tables,
                  figures, [f"Baseline family: {base!r}."], _meta(query, runs, metric=metric, baseline=base,
                                                                  n_boot=n_boot, seed=seed))


def toy_report(query: RunQuery, *, name: str | None = None, at_step: int | None = None) -> Report:
    """Table 1 from the finished runs' final error, or (at_step) from every run's validation at that step;
    with the validation error curves per column (seeds thin, mean thick)."""
    from mta_lab.report.plots import toy_curves_figure
    from mta_lab.report.toy import errors_at_step, toy_cells, toy_table

    runs = collect_runs(query)
    history = metric_histories(query.uri, list(runs["run_id"]), ["val/error_rate", "train/loss"])
    if at_step is None:
        table = toy_table(require_metric(finished_runs(runs, query), "final/val_error_rate"))
        notes = []
    else:
        reached = errors_at_step(runs, history, at_step)
        if reached.empty:
            steps = sorted(set(history["step"])) if not history.empty else []
            raise ReportError(f"--at-step {at_step}: no run validated at that step; validation steps in these runs: "
                              f"{', '.join(map(str, steps)) or 'none'}")
        table = toy_table(reached, source=f"val/error_rate at step {at_step}")
        left = runs[~runs["run_id"].isin(reached["run_id"])]
        notes = [f"{len(reached)} of {len(runs)} runs validated at step {at_step}"
                 + (f"; not: {', '.join(str(n) for n in left['run_name'])}." if len(left) else ".")]
    figures, cells = {}, toy_cells(runs)
    for key, stem in (("val/error_rate", "curves"), ("train/loss", "train_loss")):
        if (history["key"] == key).any():
            figures[stem] = (toy_curves_figure(cells, history, key),
                             f"{key} vs step per column: seeds thin, mean over seeds thick")
    return Report(name or default_name("toy", query), "toy", f"Toy task report: {query.describe()}", [table],
                  figures, notes, _meta(query, runs, at_step=at_step))


def curves_report(query: RunQuery, metrics: list[str], *, name: str | None = None) -> Report:
    from mta_lab.report.plots import curves_figure

    runs = collect_runs(query)
    history = metric_histories(query.uri, list(runs["run_id"]), metrics)
    if history.empty:
        raise ReportError(f"none of the {len(runs)} runs has a history of {', '.join(metrics)}")
    missing = [f"{r.run_name} ({r.run_id[:8]})" for r in runs.itertuples() if r.run_id not in set(history["run_id"])]
    labels = {r.run_id: f"{r.variant} s{r.seed}" for r in runs.itertuples()}
    last = history.groupby(["run_id", "key"]).last().reset_index()
    shown = pd.DataFrame({"run": last["run_id"].map(labels), "metric": last["key"], "last step": last["step"],
                          "last value": last["value"].map(lambda v: fmt(v, 4))})
    notes = [f"Runs without these metrics: {', '.join(missing)}."] if missing else []
    return Report(name or default_name("curves", query), "curves", f"Curves: {query.describe()}",
                  [Table("curves", "Last value per run and metric", shown, history, set(), notes)],
                  {"curves": (curves_figure(history, labels), f"{', '.join(metrics)} vs optimizer step")},
                  meta=_meta(query, runs, metrics=metrics))


def kernels_report(ckpt: str, *, name: str | None = None) -> Report:
    from mta_lab.eval.checkpoint import load_model
    from mta_lab.report.kernels import extract_kernels, kernel_summary
    from mta_lab.report.plots import head_mixing_figure, kq_kernel_figure

    model, payload = load_model(ckpt)
    pad_key = payload["attention"].get("pad_key", "both")
    layers = extract_kernels(model)
    summary = kernel_summary(layers, pad_key)
    figures = {}
    for kind in ("kq_pre", "kq_post"):
        if any(getattr(lk, kind) is not None for lk in layers):
            figures[kind] = (kq_kernel_figure(layers, kind, pad_key), f"learned {kind} kernels per layer and head")
    mixing = head_mixing_figure(layers)
    if mixing is not None:
        figures["head_mixing"] = (mixing, "head-mixing matrices per layer")
    shown = summary.map(lambda v: fmt(v, 4) if isinstance(v, float) else str(v))
    table = Table("kernels", "Kernel norms and distance from the identity init", shown, summary, set(),
                  ["Frobenius norms; identity = 1 at (current query, same key) for kq kernels, I for head mixing."])
    return Report(name or "kernels", "kernels", f"MTA kernels of {ckpt} (step {payload.get('step')})", [table],
                  figures, meta=_meta(None, None, ckpt=str(ckpt), step=payload.get("step"),
                                      attention=payload["attention"]))
