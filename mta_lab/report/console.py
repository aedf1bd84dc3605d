"""The ablation summary for a terminal or a log file: the few columns that fit 80 characters.

The full table (Table 5 components, Δ, params, FLOPs, failed runs) stays in the written report; this one is what a
command prints when it finishes: variant, runs that count, the metric's mean ± std, Δ% against the baseline with
its paired bootstrap CI, and throughput against the baseline.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from mta_lab.report.table import NOT_RESOLVED, Report, Table


def _metric_column(table: Table) -> str:
    """The ablation table shows the metric right after the seed count `n` (its header is the metric's name)."""
    columns = list(table.display.columns)
    return str(columns[columns.index("n") + 1])


def summary_table(table: Table) -> RichTable:
    """Variant | runs (with a finite metric / all) | metric mean ± std | Δ% [95% CI] | tok/s ×. Cells fold rather
    than truncate, so nothing is lost at any width."""
    metric = _metric_column(table)
    compact = RichTable(title=table.title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    compact.add_column("variant", justify="left", overflow="fold")
    for header in ("runs", metric, "Δ% [95% CI]", "tok/s ×"):
        compact.add_column(header, justify="right", overflow="fold")
    for i, (shown, data) in enumerate(zip(table.display.to_dict("records"), table.data.to_dict("records"),
                                          strict=True)):
        total = int(data["n_seeds"]) + int(data["failed"]) + int(data["diverged"])
        value = escape(str(shown[metric]))  # cells hold brackets ("[no CI: ...]") that are not rich markup
        if (i, metric) in table.bold:
            value = f"[bold]{value}[/bold]"
        compact.add_row(escape(str(shown["variant"])), f"{int(data['n_seeds'])}/{total}", value,
                        escape(str(shown["Δ% [95% CI]"])), escape(str(shown["throughput ×"])))
    return compact


def print_summary(report: Report, console: Console, full_report: str | None = None) -> None:
    """The report's title and notes, then each ablation table as `summary_table`, a two-line legend, and where the
    full table is."""
    console.print(f"[bold]{report.title}[/]")
    for note in report.notes:
        console.print(note, style="dim", highlight=False)
    for table in report.tables:
        console.print(summary_table(table))
        console.print(f"  runs: finished with a finite {_metric_column(table)} / all runs of the variant. "
                      f"Δ%: against the baseline, paired bootstrap 95% CI over shared seeds; {NOT_RESOLVED}: the "
                      "CI holds 0. tok/s ×: throughput over the baseline's.", style="dim", highlight=False)
    if full_report:
        console.print(f"  full table (components, Δ, params, FLOPs, failed runs): {full_report}", style="dim",
                      highlight=False)
