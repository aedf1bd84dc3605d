"""Toy (Table 1) layout and rendering on synthetic run tables."""

from __future__ import annotations

import pandas as pd
import pytest

from mta_lab.report import ReportError
from mta_lab.report.render import latex_escape, to_latex, to_markdown
from mta_lab.report.table import Report, Table
from mta_lab.report.toy import errors_at_step, toy_cells, toy_table


def _toy_runs() -> pd.DataFrame:
    rows = []
    for kind, rates in (("softmax", (0.5, 0.3)), ("mta", (0.0, 0.02))):
        for seed, rate in enumerate(rates):
            rows.append({"run_id": f"{kind}{seed}" * 4, "run_name": f"toy_n5_all_{kind}", "variant": "x",
                         "seed": str(seed), "params.attention.kind": kind, "params.data.toy_n": "5",
                         "params.data.toy_variant": "all", "metrics.final/val_error_rate": rate})
    rows.append({"run_id": "b" * 32, "run_name": "toy_n8_last_transformer", "variant": "x", "seed": "0",
                 "params.attention.kind": "softmax", "metrics.final/val_error_rate": 0.1})  # N from the name
    return pd.DataFrame(rows)


def test_toy_table_layout_and_paper_numbers():
    table = toy_table(_toy_runs())
    shown = table.display.set_index("model")
    assert list(shown.index) == ["Transformer (ours)", "Transformer (paper)", "MTA (ours)", "MTA (paper)"]
    assert list(shown.columns) == ["N=5 All", "N=8 Last"]
    assert shown.loc["Transformer (ours)", "N=5 All"] == "40.0 ± 14.1 (n=2)"
    assert shown.loc["MTA (ours)", "N=5 All"] == "1.0 ± 1.4 (n=2)"
    assert shown.loc["Transformer (ours)", "N=8 Last"] == "10.0 (n=1)" and shown.loc["MTA (ours)", "N=8 Last"] == "—"
    assert shown.loc["Transformer (paper)", "N=5 All"] == "51.6 ± 43.1"
    assert shown.loc["MTA (paper)", "N=8 Last"] == "0.0 ± 0.0"


def test_toy_table_refuses_runs_it_cannot_place():
    runs = _toy_runs().iloc[:1].assign(**{"params.data.toy_n": None, "run_name": "something"})
    with pytest.raises(ReportError, match="cannot tell the toy task's N"):
        toy_table(runs)


def _history(runs: pd.DataFrame) -> pd.DataFrame:
    # Two validations per run (steps 99 and 199); the second missing for the last run (interrupted).
    rows = []
    for i, run_id in enumerate(runs["run_id"]):
        rows.append({"run_id": run_id, "key": "val/error_rate", "step": 99, "value": 0.9 - 0.1 * i})
        if i < len(runs) - 1:
            rows.append({"run_id": run_id, "key": "val/error_rate", "step": 199, "value": 0.5 - 0.1 * i})
    return pd.DataFrame(rows)


def test_toy_table_at_a_common_step_uses_every_run_that_reached_it():
    runs = _toy_runs()
    history = _history(runs)
    early = errors_at_step(runs, history, 99)
    assert len(early) == len(runs)
    shown = toy_table(early, source="val/error_rate at step 99").display.set_index("model")
    assert shown.loc["Transformer (ours)", "N=5 All"] == "85.0 ± 7.1 (n=2)"  # 0.9 and 0.8
    assert shown.loc["Transformer (ours)", "N=8 Last"] == "50.0 (n=1)"
    late = errors_at_step(runs, history, 199)
    assert set(late["run_id"]) == set(runs["run_id"][:-1])  # the interrupted run is left out
    assert errors_at_step(runs, history, 5).empty


def test_toy_curves_figure_has_one_panel_per_table_column():
    from mta_lab.report.plots import toy_curves_figure

    runs = _toy_runs()
    fig = toy_curves_figure(toy_cells(runs), _history(runs))
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles == ["N=5 All", "N=5 Last", "N=8 All", "N=8 Last"]  # 2 N x 2 variants
    panel = next(ax for ax in fig.axes if ax.get_title() == "N=5 All")
    assert len(panel.lines) == 2 + 2 + 2  # per model: two seeds + the mean


def test_markdown_and_latex_mark_bold_and_escape():
    display = pd.DataFrame({"variant": ["a_b", "c"], "loss": ["1.0 ± 0.1", "2.0 ± 0.2"], "kq": ["✓", "×"]})
    report = Report("r", "ablation", "T", [Table("t", "Table", display, display, {(0, "loss")}, ["50% note"])])
    md = to_markdown(report)
    assert "| a_b | **1.0 ± 0.1** | ✓ |" in md and "- 50% note" in md
    tex = to_latex(report)
    assert "a\\_b & \\textbf{1.0 $\\pm$ 0.1} & \\checkmark \\\\" in tex and "50\\% note" in tex
    assert latex_escape("Δ% [x] †") == "$\\Delta$\\% [x] $^\\dagger$"
