"""The `mta-lab` command. Each subcommand lives in `mta_lab/commands/`; this file only dispatches.

Bad input (a spec, an argument) ends with one clear message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from mta_lab import __version__
from mta_lab.attention.spec import SpecError
from mta_lab.commands import attention as attention_cmd
from mta_lab.commands import bench as bench_cmd
from mta_lab.commands import count as count_cmd
from mta_lab.commands import demo as demo_cmd
from mta_lab.commands import eval as eval_cmd
from mta_lab.commands import generate as generate_cmd
from mta_lab.commands import report as report_cmd
from mta_lab.commands import sweep as sweep_cmd
from mta_lab.commands import train as train_cmd
from mta_lab.errors import TrackingError, TrainingDiverged
from mta_lab.model.config import ModelConfigError

USER_ERRORS = (SpecError, ModelConfigError, ValueError, TrackingError, TrainingDiverged)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mta-lab",
        description="Multi-Token Attention research platform: attention variants, training, sweeps, reports.",
    )
    parser.add_argument("--version", action="version", version=f"mta-lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo_cmd.add_parser(sub)
    attention_cmd.add_parser(sub)
    count_cmd.add_parser(sub)
    train_cmd.add_parser(sub)
    bench_cmd.add_parser(sub)
    eval_cmd.add_parser(sub)
    generate_cmd.add_parser(sub)
    sweep_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except USER_ERRORS as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)  # [opt] stays text
        return 2


if __name__ == "__main__":
    sys.exit(main())
