"""Toy (Table 1) layout and rendering on synthetic run tables."""

from __future__ import annotations

import pandas as pd
import pytest

from mta_lab.report import ReportError
from mta_lab.report.render import latex_escape, to_latex, to_markdown
from mta_lab.report.table import Report, Table
from mta_lab.report.toy import toy_table


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


def test_markdown_and_latex_mark_bold_and_escape():
    display = pd.DataFrame({"variant": ["a_b", "c"], "loss": ["1.0 ± 0.1", "2.0 ± 0.2"], "kq": ["✓", "×"]})
    report = Report("r", "ablation", "T", [Table("t", "Table", display, display, {(0, "loss")}, ["50% note"])])
    md = to_markdown(report)
    assert "| a_b | **1.0 ± 0.1** | ✓ |" in md and "- 50% note" in md
    tex = to_latex(report)
    assert "a\\_b & \\textbf{1.0 $\\pm$ 0.1} & \\checkmark \\\\" in tex and "50\\% note" in tex
    assert latex_escape("Δ% [x] †") == "$\\Delta$\\% [x] $^\\dagger$"
