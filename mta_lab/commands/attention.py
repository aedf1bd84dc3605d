"""`mta-lab attention list|show|backends`: the attention presets, a resolved spec and its parameter accounting, and
what backend=auto runs for each layer type on this machine."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from mta_lab.commands.options import yaml_value
from mta_lab.errors import UsageError

# The paper's 880M model (spec §4): the dimensions `show` uses unless told otherwise.
DEFAULT_DIM, DEFAULT_HEADS, DEFAULT_LAYERS = 1536, 16, 24


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("attention", help="list attention presets; show a spec and its parameter accounting")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the named presets (paper variants, Table 5 rows, toy task)")
    listing.set_defaults(handler=list_presets)

    show = actions.add_parser("show", help="a preset's fields, its kq-conv layers and its extra parameters")
    show.add_argument("preset", help="preset name (see `mta-lab attention list`)")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                      help="override a spec field, value in YAML (e.g. --set kq_pre=[4,9]); repeatable")
    show.add_argument("--dim", type=int, default=DEFAULT_DIM, help="model dim D (default: 880M's 1536)")
    show.add_argument("--heads", type=int, default=DEFAULT_HEADS, help="attention heads H (default: 16)")
    show.add_argument("--layers", type=int, default=DEFAULT_LAYERS, help="layers L (default: 24)")
    show.set_defaults(handler=show_preset)

    listing = actions.add_parser("backends", help="what backend=auto runs for each layer type here, and why not the "
                                 "others")
    listing.add_argument("--device", choices=("cpu", "cuda"), default=None,
                         help="the device to decide for (default: cuda when available, else cpu; no GPU needed)")
    listing.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    listing.set_defaults(handler=show_backends)


def list_presets(args: argparse.Namespace) -> int:
    from mta_lab.attention.presets import PRESETS

    table = Table(title="attention presets", show_lines=False)
    table.add_column("name", style="bold cyan")
    table.add_column("kind")
    table.add_column("description")
    for name, (spec, description) in PRESETS.items():
        table.add_row(name, spec.kind, description)
    Console().print(table)
    return 0


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set kq_pre=[4,9]")
        overrides[field.strip()] = yaml_value(raw, f"--set {item}")
    return overrides


def show_preset(args: argparse.Namespace) -> int:
    import torch

    from mta_lab.attention.layers import build_attention, expected_extra_parameters
    from mta_lab.attention.presets import load_preset

    spec = load_preset(args.preset, **parse_overrides(args.overrides))
    if args.heads < 1 or args.dim % args.heads:
        raise UsageError(f"--dim {args.dim} --heads {args.heads}: the number of heads must be positive and divide "
                         "the model dim")
    spec.check_model(n_heads=args.heads, n_layers=args.layers)
    console = Console()

    fields = Table(title=f"attention preset {args.preset!r}", show_header=True)
    fields.add_column("field", style="bold")
    fields.add_column("value")
    for key, value in spec.to_dict().items():
        fields.add_row(key, repr(value))
    console.print(fields)

    # Build every layer on the meta device: exact counts, no memory.
    with torch.device("meta"):
        layers = [build_attention(spec, dim=args.dim, n_heads=args.heads, layer_idx=i, n_layers=args.layers)
                  for i in range(args.layers)]
    counted = sum(layer.extra_parameters() for layer in layers)
    formula = expected_extra_parameters(spec, dim=args.dim, n_heads=args.heads, n_layers=args.layers)
    kq_layers = spec.kq_layer_indices(args.layers)
    console.print(f"model: D={args.dim}, H={args.heads}, L={args.layers}, head_dim={args.dim // args.heads}")
    console.print(f"kq-conv layers: {list(kq_layers) if kq_layers else 'none'}")
    console.print(f"extra attention parameters: {counted:,} (counted) / {formula:,} (spec §4 formula)")
    return 0 if counted == formula else 1


# The calls of the layer types (label, the op's weights present, dropout).
LAYER_TYPES = (
    ("kq conv only (kq_pre)", ("kq_pre",), False),
    ("kq conv only, with dropout", ("kq_pre",), True),
    ("head mixing only (Talking heads; the paper's layers without kq convs)", ("head_pre", "head_post"), False),
    ("head mixing with dropout", ("head_pre", "head_post"), True),
    ("paper kq layer (kq_pre + kq_post + head mixing)", ("kq_pre", "kq_post", "head_pre", "head_post"), False),
    ("kq_pre + head_post", ("kq_pre", "head_post"), False),
    ("kq_post only", ("kq_post",), False),
)
# The score-map size / compilation hints a layer gives (small: B·H·T² <= 2^29).
SITUATIONS = (("large map", {}), ("small map", {"small": True}), ("small map, compiled", {"small": True,
                                                                                          "compiling": True}))


def show_backends(args: argparse.Namespace) -> int:
    import json

    import torch

    from mta_lab.attention.backends import backends, unavailable, why_not
    from mta_lab.attention.backends.policy import MATERIALISE_UP_TO

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    layers = []
    for label, weights, dropout in LAYER_TYPES:
        options = {name: torch.zeros(1) for name in weights} | {"dropout_p": 0.1 if dropout else 0.0}
        auto = {}
        for situation, hints in SITUATIONS:
            size = MATERIALISE_UP_TO if hints.get("small") else MATERIALISE_UP_TO + 1
            auto[situation] = why_not({**options, "score_elements": size,
                                       "compiling": hints.get("compiling", False)}, device)[0]
        chosen, reasons = why_not({**options, "score_elements": MATERIALISE_UP_TO + 1}, device)
        layers.append({"layer": label, "options": [*weights, *(["dropout"] if dropout else [])], "auto": auto,
                       "not_chosen": reasons})
    report = {"device": device, "installed": [b.name for b in backends()], "unavailable": unavailable(),
              "layers": layers}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = Console()
    listing = Table(title="attention backends")
    for column in ("backend", "runs on", "implements", "here"):
        listing.add_column(column, style="bold cyan" if column == "backend" else None)
    for name in report["installed"]:
        backend = next(b for b in backends() if b.name == name)
        listing.add_row(name, ", ".join(backend.devices), backend.calls, "installed")
    for name, reason in report["unavailable"].items():
        listing.add_row(name, "", "", f"unavailable: {reason}")
    console.print(listing)
    table = Table(title=f"what backend=auto runs on {device} (small map: B·H·T² <= 2^29 scores)")
    table.add_column("layer type", style="bold")
    for situation, _ in SITUATIONS:
        table.add_column(situation, style="cyan")
    for layer in layers:
        table.add_row(layer["layer"], *layer["auto"].values())
    console.print(table)
    console.print("[bold]why not the others[/] (large map):")
    for layer in layers:
        console.print(f"[bold]{layer['layer']}[/] -> {layer['auto']['large map']}")
        for name, why in layer["not_chosen"].items():
            console.print(f"    {name}: {why}")
    return 0
