"""A sweep file changed after its study was created: its identity hash (stored on the study at `create`), what
changed (variants added, removed or changed; any other field), and the one message that says what to do.

The identity is the spec without its run policy: `storage` (where the study lives: it was found there),
`description` (a note), `record` (metrics kept on the trials), `max_failures` / `max_retries` (a stopped
sweep's message says to raise them) and `hpo.n_trials` (an HPO study may be extended) may change; anything
else changes what the trials are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mta_lab.errors import UserError

POLICY = ("storage", "description", "max_failures", "max_retries", "record")


class SweepChanged(UserError, ValueError):
    """The sweep file differs from the one its study was created with."""


def identity(spec_data: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's fields that define its trials (spec_data: the spec as plain data, e.g. the study's mta.spec)."""
    data = {k: v for k, v in spec_data.items() if k not in POLICY and k != "source"}
    if isinstance(data.get("hpo"), Mapping):
        data["hpo"] = {k: v for k, v in data["hpo"].items() if k != "n_trials"}
    return data


def spec_hash(spec_data: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity(spec_data), sort_keys=True).encode()).hexdigest()


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


def _diff(old: Any, new: Any, where: str, out: list[str]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in dict.fromkeys([*new, *old]):
            _diff(old.get(key), new.get(key), f"{where}.{key}" if where else str(key), out)
    elif json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
        out.append(f"{where} {_show(old)} -> {_show(new)}")


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Each change from `old` to `new` in words: 'variant c added', 'variant b changed ([x] -> [y])',
    'seeds [0] -> [0, 1]', 'objective.metric final/val_loss -> val/loss'."""
    old, new = identity(old), identity(new)
    out: list[str] = []
    old_v = dict((old.get("ablation") or {}).get("variants") or {})
    new_v = dict((new.get("ablation") or {}).get("variants") or {})
    out += [f"variant {name} added" for name in new_v if name not in old_v]
    out += [f"variant {name} removed" for name in old_v if name not in new_v]
    out += [f"variant {name} changed ({_show(old_v[name])} -> {_show(new_v[name])})" for name in new_v
            if name in old_v and list(old_v[name]) != list(new_v[name])]
    if list(old_v) != list(new_v) and set(old_v) == set(new_v):
        out.append(f"variants reordered ({_show(list(old_v))} -> {_show(list(new_v))}; the first is the baseline)")
    strip = ({**old, "ablation": {k: v for k, v in (old.get("ablation") or {}).items() if k != "variants"}},
             {**new, "ablation": {k: v for k, v in (new.get("ablation") or {}).items() if k != "variants"}})
    _diff(*strip, "", out)
    return out


def check_unchanged(created: Mapping[str, Any], current: Mapping[str, Any], *, name: str, source: str | None,
                    sweep_dir: Path, stored_hash: str | None = None) -> None:
    """SweepChanged when `current` (the sweep file now) differs in identity from `created` (the study's spec)."""
    if (stored_hash or spec_hash(created)) == spec_hash(current):
        return
    changes = describe_changes(created, current) or ["its trials' definition changed"]
    file = source or f"the sweep file of {name}"
    raise SweepChanged(
        f"sweep {name}: {file} changed since the study in {sweep_dir} was created: {'; '.join(changes)}. The study "
        "keeps the trials it was created with, so it would run the old ones (or none of the new). To run the file "
        f"as it is now, give it a new sweep directory (--dir NEW_DIR) or a new name; to start this one over, delete "
        f"{sweep_dir} (its runs and MLflow database too) and run it again; to continue this study, restore the file")
