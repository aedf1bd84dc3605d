"""`mta-lab attention list|show`: the attention presets, a resolved spec and its parameter accounting."""

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
