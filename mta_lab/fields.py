"""Strict construction of config dataclasses from mappings (Hydra nodes, YAML): unknown keys are errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def known_fields(cls: type, data: Mapping[str, Any], section: str, error: type[Exception]) -> dict[str, Any]:
    """`data` as a dict, after checking every key is a field of the dataclass `cls`; else `error` naming them."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f"{section}: unknown field(s) {', '.join(unknown)}; allowed fields: {', '.join(sorted(known))}")
    return dict(data)


def plain(value: Any) -> Any:
    """`value` as YAML/JSON-ready containers: tuples become lists, mapping keys strings, recursively."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
