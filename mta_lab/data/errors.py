"""DataConfigError: the one exception for bad data input (a config value, a data file, a tokenizer file)."""

from __future__ import annotations

from typing import Any

from mta_lab.errors import UserError


class DataConfigError(UserError, ValueError):
    """Bad data input. The message names the thing (a `data.<field>` or a file) and what to do about it."""


def fail(field: str, value: Any, problem: str) -> DataConfigError:
    """The error for config field `data.<field>`: `data.<field>=<value>: <problem>`."""
    return DataConfigError(f"data.{field}={value!r}: {problem}")
