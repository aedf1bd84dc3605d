"""`mta-lab eval toy ckpt=<path>`: sample error rate of a toy-task model on a freshly generated test set."""

from __future__ import annotations

import argparse
import json
import math

from rich.console import Console
from rich.progress import Progress

from mta_lab.commands.options import parse_key_values
from mta_lab.errors import UsageError

USAGE = ("ckpt=<run dir | final/model.pt | checkpoints/*.ckpt> [samples=1000] [data_seed=1] [batch_size=250] "
         "[device=auto]")
DEFAULTS = {"ckpt": None, "samples": 1000, "data_seed": 1, "batch_size": 250, "device": "auto"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="evaluate a trained checkpoint (toy task: sample error rate)")
    kinds = parser.add_subparsers(dest="eval", metavar="TASK", required=True)
    toy = kinds.add_parser(
        "toy", help="toy-task sample error rate on a fresh test set",
        description=f"mta-lab eval toy {USAGE}. The test set is generated from data_seed; any seed gives held-out "
        "inputs (test inputs are disjoint from every training input by construction).",
    )
    toy.add_argument("options", nargs="*", metavar="KEY=VALUE", help=USAGE)
    toy.add_argument("--json", action="store_true", help="print the result as JSON")
    toy.set_defaults(handler=run_toy)


def parse_options(items: list[str]) -> dict:
    options = parse_key_values(items, DEFAULTS, usage=USAGE, raw_keys=("ckpt", "device"))
    if not options["ckpt"]:
        raise UsageError(f"ckpt= is required; usage: mta-lab eval toy {USAGE}")
    for key in ("samples", "batch_size"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise UsageError(f"{key}={options[key]!r}: must be a positive integer")
    return options


def run_toy(args: argparse.Namespace) -> int:
    import torch

    from mta_lab.data import DataConfig, build_data
    from mta_lab.eval.checkpoint import load_model
    from mta_lab.eval.toy import evaluate_toy

    options = parse_options(args.options)
    device = options["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, payload = load_model(options["ckpt"])
    data = payload.get("data")
    if not data or data.get("kind") != "toy":
        raise UsageError(f"ckpt={options['ckpt']}: this model was not trained on the toy task (data kind: "
                         f"{(data or {}).get('kind', 'unknown')})")
    config = DataConfig.from_dict({**data, "toy_test_samples": options["samples"], "data_seed": options["data_seed"]})
    bundle = build_data(config, seq_len=0)
    batches = bundle.val_batches(options["batch_size"])["toy"]
    # On stderr, gone when done: a 10k-sample eval takes minutes on a CPU; --json output stays clean.
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"eval toy ({device})", total=math.ceil(options["samples"] / options["batch_size"]))
        errors = evaluate_toy(model.to(device), progress.track(batches, task_id=task), device=device)
    result = {"ckpt": options["ckpt"], "step": payload.get("step"), "toy_n": config.toy_n,
              "toy_variant": config.toy_variant, "data_seed": config.data_seed, "samples": errors.samples,
              "errors": errors.errors, "error_rate": errors.rate}
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(f"toy N={config.toy_n} {config.toy_variant}: {errors.errors} / {errors.samples} samples wrong "
                        f"= [bold]{100 * errors.rate:.2f}%[/] error (data_seed={config.data_seed}, step "
                        f"{payload.get('step')})")
    return 0
