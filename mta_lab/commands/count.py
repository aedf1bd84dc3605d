"""`mta-lab count model=<preset> attention=<preset>`: parameter and FLOP accounting on the meta device."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from mta_lab.commands.options import yaml_value
from mta_lab.errors import UsageError

USAGE = "model=<preset> attention=<preset> [seq_len=N] [model.FIELD=VALUE ...] [attention.FIELD=VALUE ...]"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "count",
        help="parameters (breakdown + total) and FLOPs per token of a model preset with an attention preset",
        description=f"mta-lab count {USAGE}. Builds the model on the meta device (no memory, even for 1B) "
        "and checks the analytic count against sum(p.numel()).",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=USAGE)
    parser.set_defaults(handler=run)


def parse_overrides(items: list[str]) -> tuple[str, str, int | None, dict, dict]:
    model, attention, seq_len = "tiny", "transformer", None
    model_fields: dict = {}
    attention_fields: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"{item!r}: expected KEY=VALUE; usage: mta-lab count {USAGE}")
        value = yaml_value(raw, item)
        if key == "model":
            model = str(raw)
        elif key == "attention":
            attention = str(raw)
        elif key == "seq_len":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"seq_len={raw!r}: must be a positive integer")
            seq_len = value
        elif key.startswith("model."):
            model_fields[key.removeprefix("model.")] = value
        elif key.startswith("attention."):
            attention_fields[key.removeprefix("attention.")] = value
        else:
            raise UsageError(f"{key!r} is not a count option; usage: mta-lab count {USAGE}")
    return model, attention, seq_len, model_fields, attention_fields


def run(args: argparse.Namespace) -> int:
    import torch

    from mta_lab.attention.presets import load_preset
    from mta_lab.model.accounting import count_parameters, flops_per_token
    from mta_lab.model.config import load_model_preset
    from mta_lab.model.transformer import build_model

    model_name, attention_name, seq_len, model_fields, attention_fields = parse_overrides(args.overrides)
    config = load_model_preset(model_name, **model_fields)
    spec = load_preset(attention_name, **attention_fields)
    seq_len = seq_len or config.max_seq_len
    with torch.device("meta"):
        model = build_model(config, spec)
    numel = sum(p.numel() for p in model.parameters())
    params = count_parameters(config, spec)
    flops = flops_per_token(config, spec, seq_len)

    console = Console()
    table = Table(title=f"model={model_name} attention={attention_name}")
    table.add_column("parameters", style="bold")
    table.add_column("count", justify="right")
    for name in ("embeddings", "attention", "mlp", "norms", "attention_extras"):
        table.add_row(name.replace("_", " "), f"{getattr(params, name):,}")
    table.add_row("total", f"{params.total:,}", style="bold")
    console.print(table)
    console.print(f"FLOPs per token at context {seq_len}: forward {flops.forward:,} (dense {flops.dense:,}, "
                  f"attention {flops.attention:,}, MTA/mixing {flops.attention_extras:,}); training {flops.train:,}")
    if numel != params.total:
        console.print(f"[bold red]analytic count {params.total:,} != sum(p.numel()) {numel:,}[/]")
        return 1
    print(f"total: {numel}")
    return 0
