"""KEY=VALUE arguments of the small subcommands (bench, eval, generate, count): known keys only, values read as YAML."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from mta_lab.errors import UsageError


def yaml_value(text: str, item: str) -> Any:
    """`text` read as YAML (`4`, `[4, 9]`, `true`); a UsageError naming `item` when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise UsageError(f"{item!r}: the value is not valid YAML ({problem})") from None


def parse_key_values(items: Iterable[str], defaults: Mapping[str, Any], *, usage: str,
                     raw_keys: Iterable[str] = ()) -> dict[str, Any]:
    """`defaults` updated by `KEY=VALUE` items; keys in `raw_keys` keep their text, others are parsed as YAML."""
    options, raw = dict(defaults), set(raw_keys)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise UsageError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(defaults)}; usage: {usage}")
        options[key] = value if key in raw else yaml_value(value, item)
    return options
