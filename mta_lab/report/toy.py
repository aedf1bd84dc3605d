"""The paper's Table 1 layout: toy-task error % (mean ± std over seeds) per N and answer variant, Transformer vs
MTA, with the paper's numbers beside ours (mta-spec.md §5)."""

from __future__ import annotations

import re

import pandas as pd

from mta_lab.report.collect import numeric
from mta_lab.report.errors import ReportError
from mta_lab.report.stats import summarize
from mta_lab.report.table import Table, fmt_pm

VARIANTS = ("all", "first", "last")
PAPER = {  # model -> (N, variant) -> (mean %, std %), paper Table 1 over 3 seeds
    "Transformer": {(5, "all"): (51.6, 43.1), (5, "first"): (78.2, 1.5), (5, "last"): (1.3, 0.4),
                    (8, "all"): (31.2, 50.3), (8, "first"): (28.9, 24.9), (8, "last"): (58.4, 46.8)},
    "MTA": {(5, "all"): (0.1, 0.1), (5, "first"): (0.0, 0.0), (5, "last"): (0.0, 0.0),
            (8, "all"): (0.1, 0.0), (8, "first"): (0.0, 0.0), (8, "last"): (0.0, 0.0)},
}
MODELS = {"softmax": "Transformer", "mta": "MTA"}
_NAME = re.compile(r"toy_n(\d+)_(all|first|last)_")


FINAL = "metrics.final/val_error_rate"


def toy_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """(model, N, variant, seed, error %) per run, the error from the FINAL column (a fraction; NaN allowed for
    the curves). N and the answer variant come from the logged data.toy_n / data.toy_variant params, else from a
    run/variant name like toy_n5_all_mta; the model from attention.kind."""
    rows = []
    for r in runs.to_dict("records"):
        n, variant = r.get("params.data.toy_n"), r.get("params.data.toy_variant")
        if n is None or variant is None or pd.isna(n) or pd.isna(variant):
            match = next((m for m in (_NAME.search(str(r.get(k, ""))) for k in ("run_name", "variant")) if m), None)
            if match is None:
                raise ReportError(f"run {r['run_name']} ({r['run_id'][:8]}): cannot tell the toy task's N and answer "
                                  "variant (no data.toy_n/data.toy_variant params, no toy_nN_VARIANT_ name)")
            n, variant = match.group(1), match.group(2)
        kind = str(r.get("params.attention.kind", ""))
        if kind not in MODELS:
            raise ReportError(f"run {r['run_name']} ({r['run_id'][:8]}): attention kind {kind!r} is not in Table 1 "
                              "(softmax Transformer or MTA)")
        rows.append({"model": MODELS[kind], "N": int(n), "variant": str(variant), "seed": r["seed"],
                     "run_id": r["run_id"], "error_pct": 100 * float(r.get(FINAL, float("nan")))})
    return pd.DataFrame(rows)


def errors_at_step(runs: pd.DataFrame, history: pd.DataFrame, step: int) -> pd.DataFrame:
    """The runs that validated at `step` (any status: an interrupted sweep's runs count up to where they got),
    with FINAL replaced by their val/error_rate there."""
    at = history[(history["key"] == "val/error_rate") & (history["step"] == step)]
    value = dict(zip(at["run_id"], at["value"], strict=True))
    reached = runs[runs["run_id"].isin(value)]
    return reached.assign(**{FINAL: reached["run_id"].map(value)})


def toy_table(runs: pd.DataFrame, *, source: str = "final/val_error_rate") -> Table:
    cells = toy_cells(runs.assign(**{FINAL: numeric(runs, FINAL)}))
    columns = sorted({(n, v) for n, v in zip(cells["N"], cells["variant"], strict=True)},
                     key=lambda c: (c[0], VARIANTS.index(c[1]) if c[1] in VARIANTS else 9))
    shown, data = [], []
    for model in ("Transformer", "MTA"):
        ours, paper = {"model": f"{model} (ours)"}, {"model": f"{model} (paper)"}
        for n, v in columns:
            label = f"N={n} {v.capitalize()}"
            sel = cells[(cells["model"] == model) & (cells["N"] == n) & (cells["variant"] == v)]
            s = summarize(sel["error_pct"].tolist())
            ours[label] = f"{fmt_pm(s.mean, s.std, 1)} (n={s.n})" if s.n else "—"
            p = PAPER[model].get((n, v))
            paper[label] = fmt_pm(*p, 1) if p else "—"
            data.append({"model": model, "N": n, "variant": v, "n_seeds": s.n, "error_pct_mean": s.mean,
                         "error_pct_std": s.std, "paper_mean": p[0] if p else None, "paper_std": p[1] if p else None})
        shown += [ours, paper]
    notes = ["Sample error % (any answer token or EOS wrong, teacher-forced argmax) on the held-out test set, "
             f"mean ± std over seeds (n = seeds); from {source}.",
             "Paper rows: the paper's Table 1 (100k steps, batch 64, 3 seeds); a short "
             "run is not expected to reach them. The paper evaluated its baseline with dropout on (spec §5)."]
    return Table("toy", "Toy task (paper Table 1): error %", pd.DataFrame(shown), pd.DataFrame(data), set(), notes)
