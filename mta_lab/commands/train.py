"""`mta-lab train [overrides]`: one training run, configured by Hydra overrides, tracked in MLflow."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from rich.console import Console
from rich.table import Table


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a model (default: the tiny model on the embedded corpus, CPU, about a minute)",
        description="Train one run. Overrides use Hydra's grammar, e.g. `mta-lab train attention=mta "
        "train.max_steps=500`, `mta-lab train experiment=toy attention=toy_mta_n5`, "
        "`mta-lab train resume=auto name=NAME`. "
        "Config groups: model, attention, data, optim, train, trainer, tracking, experiment (see conf/).",
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="Hydra overrides (key=value)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mta_lab.train.interrupts import TrainingInterrupted, signals_raise

    config = None
    try:
        with signals_raise():
            config = _configure(args)
            if config is None:
                return 0
            from mta_lab.train.entry import train

            result = train(config, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        print(_interrupted_line(stop, args.overrides, config), file=sys.stderr, flush=True)
        return stop.exit_code
    _show(config, result)
    return 0


def _configure(args: argparse.Namespace):
    """The validated RunConfig, or None after printing it (`--print-config`)."""
    import yaml

    from mta_lab.conf import load_run_config

    # One time stamp for the whole run's default name: DDP/FSDP ranks re-run this command and inherit it.
    stamp = os.environ.setdefault("MTA_LAB_RUN_STAMP", time.strftime("%Y%m%d-%H%M%S"))
    config = load_run_config(args.overrides, stamp=stamp)
    if args.print_config:
        Console().print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return None
    return config


def _interrupted_line(stop, overrides: list[str], config) -> str:
    """One line: what stopped the run, what MLflow records, and the command that continues it."""
    if config is None or stop.run_id is None:
        return f"interrupted by {stop.signal_name} before training started (no MLflow run was created)"
    kept = [o for o in overrides if not o.startswith(("name=", "resume=", "root="))]
    again = shlex.join(["mta-lab", "train", *kept, f"name={config.name}", f"root={config.root}", "resume=auto"])
    return (f"interrupted by {stop.signal_name} at step {stop.step}: MLflow run {stop.run_id} is marked KILLED; "
            f"continue it from its last checkpoint with `{again}`")


def _show(config, result) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    console = Console()
    table = Table(title=f"run {config.name} ({config.model_name} / {config.attention_name})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.metrics.items():
        if key.startswith("eval/") and key.count("/") > 2:  # per setting: in MLflow and the eval reports
            continue
        shown = f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
        table.add_row(key.removeprefix("final/"), shown)
    console.print(table)
    for task, reason in getattr(result, "eval_failures", {}).items():
        console.print(f"[red]eval {task} failed[/] (tag mta.eval_failed; the training is FINISHED): {reason}",
                      highlight=False)
    if result.resumed_from:
        console.print(f"resumed from {result.resumed_from}")
    console.print(f"run directory: {result.run_dir}  (checkpoints/, final/model.pt, config.yaml)")
    console.print(f"MLflow: run {result.run_id} in experiment '{result.experiment}' at {result.tracking_uri}")
    console.print(f"  browse: mlflow ui --backend-store-uri {result.tracking_uri}")
