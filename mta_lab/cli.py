"""The `mta-lab` command. Each subcommand lives in `mta_lab/commands/`; this file only dispatches.

`COMMANDS` is the table of subcommands. The top-level parser lists them from the table alone; only the chosen
command's module is imported (its `add_parser` builds that subparser, its handler runs), so `mta-lab --help`
and `mta-lab COMMAND --help` start without torch.

Bad input (a spec, an argument: any `UserError`) ends with one clear message and exit status 2. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NamedTuple

from mta_lab import __version__
from mta_lab.errors import UserError


class Command(NamedTuple):
    module: str  # defines add_parser(sub), which adds the subparser and sets its handler
    help: str  # the line in `mta-lab --help`; the same text as the module's own subparser help


COMMANDS: dict[str, Command] = {
    "demo": Command("mta_lab.commands.demo",
                    "run a small real ablation end to end and write its report (CPU, ~7 min)"),
    "attention": Command("mta_lab.commands.attention",
                         "list attention presets; show a spec and its parameter accounting"),
    "count": Command("mta_lab.commands.count",
                     "parameters (breakdown + total) and FLOPs per token of a model preset with an attention preset"),
    "train": Command("mta_lab.commands.train",
                     "train a model (default: the tiny model on the embedded corpus, CPU, about a minute)"),
    "bench": Command("mta_lab.commands.bench",
                     "benchmarks: training throughput / MFU / memory (results in reports/bench)"),
    "eval": Command("mta_lab.commands.eval",
                    "evaluate a trained checkpoint: toy, niah, babilong, lambada, zeroshot, harness"),
    "generate": Command("mta_lab.commands.generate",
                        "sample tokens from a trained checkpoint (incremental decoding cache)"),
    "sweep": Command("mta_lab.commands.sweep", "run ablations, HPO studies and scaling sweeps (Optuna + MLflow)"),
    "report": Command("mta_lab.commands.report", "ablation tables, scaling-law fits and plots from MLflow runs"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed; `command`'s subparser is the full one from its module."""
    parser = argparse.ArgumentParser(
        prog="mta-lab",
        description="Multi-Token Attention research platform: attention variants, training, sweeps, reports.",
    )
    parser.add_argument("--version", action="version", version=f"mta-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in COMMANDS.items():
        if name == command:
            importlib.import_module(entry.module).add_parser(sub)
        else:
            sub.add_parser(name, help=entry.help)
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The command named in `argv`: its first argument not an option (the top level has no option with a value)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv)).parse_args(argv)
    try:
        return args.handler(args) or 0
    except UserError as err:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # [opt] stays text
        return 2


if __name__ == "__main__":
    sys.exit(main())
