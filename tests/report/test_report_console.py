"""The ablation summary a command prints (mta-lab demo's closing table): readable at 80 columns, nothing truncated."""

from __future__ import annotations

import re

import pandas as pd
from rich.console import Console

from mta_lab.report.ablation import ablation_table
from mta_lab.report.console import print_summary
from mta_lab.report.table import Report

LONG = "t5_kq_6x11_head_pre_post_group_norm"  # longer than its column can be at 80 characters


def _runs() -> pd.DataFrame:
    """Three variants x 2 seeds as `collect_runs` returns them (Table 5 names, so the full table has 14 columns);
    one MTA seed FAILED."""
    rows, trial = [], 0
    for variant, attention, loss, tps, kq in (("transformer", "transformer", 2.40, 1000.0, "None"),
                                              ("mta", "mta", 2.35, 600.0, "6x11"),
                                              (LONG, "t5_kq_6x11", 2.38, 800.0, "6x11")):
        for seed in (0, 1):
            failed = variant == "mta" and seed == 1
            rows.append({"run_id": f"r{trial}", "run_name": f"{variant}-s{seed}", "variant": variant,
                         "attention": attention, "seed": str(seed), "trial": str(trial),
                         "status": "FAILED" if failed else "FINISHED",
                         "metrics.final/val_loss": None if failed else loss + 0.01 * seed,
                         "metrics.final/params": 1e6 if attention == "transformer" else 1.01e6,
                         "metrics.final/flops_per_token": 2e6, "metrics.final/tokens_per_s": tps,
                         "params.attention.kq_pre": kq})
            trial += 1
    return pd.DataFrame(rows)


def _printed(width: int) -> tuple[str, pd.DataFrame]:
    table = ablation_table(_runs(), "final/val_loss", n_boot=200, seed=0)
    console = Console(width=width, record=True)
    print_summary(Report("demo", "ablation", "Ablation report", [table]), console, full_report="reports/demo/report.md")
    return console.export_text(), table.display


def _in_order(words: list[str], block: list[str]) -> bool:
    """`words` appear in `block` (a table row's lines, cells wrapped side by side) in order, each one whole."""
    tokens = iter(" ".join(block).split())
    return all(any(word == token for token in tokens) for word in words)


def test_summary_fits_80_columns_without_truncating_a_cell():
    text, display = _printed(80)
    assert "…" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"\d+/\d+", (line.split() + ["", ""])[1])]
    ends = starts[1:] + [next(i for i, line in enumerate(lines) if line.startswith("  runs:"))]
    blocks = {lines[i].split()[0]: lines[i:j] for i, j in zip(starts, ends, strict=True)}  # a row's lines
    for variant in ("transformer", "mta"):  # every cell whole (wrapped at spaces at most)
        shown = display.set_index("variant").loc[variant]
        for cell in (shown["final/val_loss"], shown["Δ% [95% CI]"], shown["throughput ×"]):
            assert _in_order(cell.split(), blocks[variant]), (cell, blocks[variant])
    assert "[no CI: < 2 paired seeds]" in display.set_index("variant").loc["mta", "Δ% [95% CI]"]  # not markup
    assert blocks["transformer"][0].split()[1] == "2/2"
    assert blocks["mta"][0].split()[1] == "1/2"  # the FAILED seed counts against it
    assert len(blocks) == 3
    assert LONG in "".join(line.split()[0] for line in blocks[LONG[:20]])  # folded over lines, not cut
    assert "reports/demo/report.md" in text


def test_summary_at_a_narrow_width_folds_instead_of_truncating():
    text, _ = _printed(50)
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 50


def test_runs_started_from_a_parent_show_its_perplexity_beside_theirs():
    runs = _runs()
    runs["metrics.init/parent_val_ppl"] = 12.0
    runs["metrics.init/val_ppl"] = [12.0, 12.0, 13.5, 13.5, 12.0, 12.0]
    runs["metrics.final/val_ppl"] = 11.0
    table = ablation_table(runs, "final/val_loss", n_boot=200, seed=0)
    shown = table.display.set_index("variant")
    assert list(shown.loc["mta", ["parent ppl", "step-0 ppl", "ppl"]]) == ["12.000", "13.500", "11.000"]
    assert any("init/parent_val_ppl" in note for note in table.notes)
    assert "parent ppl" not in ablation_table(_runs(), "final/val_loss", n_boot=200, seed=0).display
