"""`mta-lab bench train ...`: model-level throughput, MFU and memory, written under reports/bench/."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from mta_lab.commands.options import parse_key_values

USAGE = ("model=300m,880m attention=transformer,mta,talking_heads,diff [batch_size=2] [seq_len=2048] [steps=30] "
         "[warmup=5] [compile=true] [peak_flops=FLOP/s] [out=reports/bench] [tag=NAME]")
DEFAULTS = {"model": "tiny", "attention": "transformer,mta,talking_heads,diff", "batch_size": 2, "seq_len": 256,
            "steps": 20, "warmup": 3, "compile": False, "peak_flops": None, "out": "reports/bench", "tag": None}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks: training throughput / MFU / memory (results in reports/bench)")
    kinds = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    train = kinds.add_parser("train", help="tokens/s, MFU and peak memory of model x attention presets",
                             description=f"mta-lab bench train {USAGE}. Comma lists run one after another in "
                             "one process; ratios to the Transformer of the same size are in the table.")
    train.add_argument("options", nargs="*", metavar="KEY=VALUE", help=USAGE)
    train.set_defaults(handler=run_train)


def parse_options(items: list[str]) -> dict:
    return parse_key_values(items, DEFAULTS, usage=USAGE, raw_keys=("model", "attention", "out", "tag"))


def run_train(args: argparse.Namespace) -> int:
    from mta_lab.attention.presets import load_preset
    from mta_lab.bench.train_bench import bench_one, default_device, markdown_table, peak_flops_for, write_report
    from mta_lab.model.config import load_model_preset

    options = parse_options(args.options)
    models, attentions = options["model"].split(","), options["attention"].split(",")
    for name in models:
        load_model_preset(name)  # unknown names fail before any work
    for name in attentions:
        load_preset(name)
    device = default_device()
    peak = peak_flops_for(device, options["peak_flops"])
    console = Console()
    results = []
    with Progress(console=console) as progress:
        task = progress.add_task("bench train", total=len(models) * len(attentions))
        for model in models:
            for attention in attentions:
                progress.update(task, description=f"{model} / {attention}")
                results.append(bench_one(model, attention, batch_size=options["batch_size"],
                                         seq_len=options["seq_len"], steps=options["steps"],
                                         warmup=options["warmup"], compile_model=bool(options["compile"]),
                                         device=device, peak_flops=peak))
                progress.advance(task)
    tag = options["tag"] or f"train-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "mta-lab bench train " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    path = write_report(results, Path(options["out"]), tag=tag, command=command, settings=options)
    console.print(markdown_table(results))
    console.print(f"written: {path} and {path.with_suffix('.json')}")
    return 0
