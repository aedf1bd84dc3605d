"""The one error type of the reports: bad input (no such experiment, no finished runs, a missing metric)."""

from __future__ import annotations

from mta_lab.errors import UserError


class ReportError(UserError, ValueError):
    """A report cannot be made from what was asked; the message says what is missing and what exists."""
