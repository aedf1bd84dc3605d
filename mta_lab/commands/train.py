"""`mta-lab train [overrides]`: one training run, configured by Hydra overrides, tracked in MLflow."""

from __future__ import annotations

import argparse
import os
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
    import yaml

    from mta_lab.conf import load_run_config

    # One time stamp for the whole run's default name: DDP/FSDP ranks re-run this command and inherit it.
    stamp = os.environ.setdefault("MTA_LAB_RUN_STAMP", time.strftime("%Y%m%d-%H%M%S"))
    config = load_run_config(args.overrides, stamp=stamp)
    console = Console()
    if args.print_config:
        console.print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0

    from lightning.pytorch.utilities import rank_zero_only

    from mta_lab.train.entry import train

    result = train(config, progress=not args.no_progress)
    if rank_zero_only.rank != 0:
        return 0
    table = Table(title=f"run {config.name} ({config.model_name} / {config.attention_name})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.metrics.items():
        shown = f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
        table.add_row(key.removeprefix("final/"), shown)
    console.print(table)
    if result.resumed_from:
        console.print(f"resumed from {result.resumed_from}")
    console.print(f"run directory: {result.run_dir}  (checkpoints/, final/model.pt, config.yaml)")
    console.print(f"MLflow: run {result.run_id} in experiment '{result.experiment}' at {result.tracking_uri}")
    console.print(f"  browse: mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0
