"""Reports from MLflow: collect runs, statistics, ablation tables, scaling-law fits, plots, rendering.

Data flows one way: MLflow (`collect`) -> numbers (`stats`, `ablation`, `scaling`, `toy`, `kernels`) -> a `Report`
of tables and figures (`build`) -> files under reports/<name>/ (`render`).
"""

from mta_lab.report.errors import ReportError

__all__ = ["ReportError"]
