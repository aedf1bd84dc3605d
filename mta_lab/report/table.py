"""A report's building blocks: a Table (display text + raw numbers) and a Report (tables, figures, notes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

CHECK, CROSS, NOT_RESOLVED = "✓", "×", "†"


@dataclass
class Table:
    """`display`: the cells as shown (strings); `data`: the numbers behind them (written as CSV);
    `bold`: (row position, column) cells shown bold; `notes`: footnotes printed under the table."""

    name: str
    title: str
    display: pd.DataFrame
    data: pd.DataFrame
    bold: set[tuple[int, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    name: str
    kind: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # file stem -> (matplotlib Figure, caption)
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def fmt(x: float, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 10 ** -(digits)):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def fmt_pm(mean: float, std: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "—"
    return fmt(mean, digits) if not math.isfinite(std) else f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_signed(x: float, digits: int = 3, suffix: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.{digits}f}{suffix}"


def fmt_ci(lo: float, hi: float, digits: int = 3, suffix: str = "") -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "[no CI: < 2 paired seeds]"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]{suffix}"
