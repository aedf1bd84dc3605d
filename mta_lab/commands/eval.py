"""`mta-lab eval TASK ckpt=<path> [KEY=VALUE ...] [--json] [--export FILE]`: evaluate a trained checkpoint.

Tasks: toy (sample error rate), niah, babilong, lambada, zeroshot, harness (lm-evaluation-harness). Every option
is checked, and the checkpoint loaded and checked against the settings, before any work or MLflow write; results
go to the checkpoint's MLflow run at the end (`mta_lab/eval/tracking.py`).
"""

from __future__ import annotations

import argparse
import json
import math

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mta_lab.commands.options import parse_key_values
from mta_lab.errors import UsageError
from mta_lab.eval.options import CKPT, COMMON_USAGE, RAW, TASKS, check_options, usage

HELP = "evaluate a trained checkpoint: toy, niah, babilong, lambada, zeroshot, harness"
TOY_USAGE = (f"{CKPT} [samples=1000] [data_seed=1] [batch_size=250] [device=auto]")
TOY_DEFAULTS = {"ckpt": None, "samples": 1000, "data_seed": 1, "batch_size": 250, "device": "auto"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help=HELP,
                            description="Evaluate a trained checkpoint: mta-lab eval TASK ckpt=... [KEY=VALUE ...]. "
                            "Results go to the checkpoint's MLflow run (track=auto) as eval/<task>/<setting>/<metric>.")
    kinds = parser.add_subparsers(dest="eval", metavar="TASK", required=True)
    toy = kinds.add_parser(
        "toy", help="toy-task sample error rate on a fresh test set",
        description=f"mta-lab eval toy {TOY_USAGE}. The test set is generated from data_seed; any seed gives held-out "
        "inputs (test inputs are disjoint from every training input by construction).",
    )
    toy.add_argument("options", nargs="*", metavar="KEY=VALUE", help=TOY_USAGE)
    toy.add_argument("--json", action="store_true", help="print the result as JSON")
    toy.set_defaults(handler=run_toy)
    for name, (help_text, _, task_usage) in TASKS.items():
        p = kinds.add_parser(name, help=help_text,
                             description=f"mta-lab eval {name} {CKPT} {task_usage} {COMMON_USAGE}. {help_text}.")
        p.add_argument("options", nargs="*", metavar="KEY=VALUE", help=f"{task_usage} {COMMON_USAGE}")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        p.add_argument("--export", metavar="FILE", default=None,
                       help="write every sample as JSONL (prompt, expected answer, output, generator metadata)")
        p.set_defaults(handler=run_task)


# ---------------------------------------------------------------- options
def parse_task_options(task: str, items: list[str]) -> dict:
    """KEY=VALUE items over the task's defaults, checked (`mta_lab/eval/options.py`)."""
    return check_options(task, parse_key_values(items, TASKS[task][1], usage=usage(task), raw_keys=RAW))


# ---------------------------------------------------------------- running
def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda: no CUDA device is available here; use device=cpu")
    return name


def _progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=True)


def run_task(args: argparse.Namespace) -> int:
    import time

    from mta_lab.eval.checkpoint import load_model
    from mta_lab.eval.errors import EvalError
    from mta_lab.eval.lm import TorchLM
    from mta_lab.eval.run import evaluate
    from mta_lab.eval.tokenizer import checkpoint_tokenizer
    from mta_lab.eval.tracking import check_target, find_target, record

    task = args.eval
    options = parse_task_options(task, args.options)
    if args.export:
        from pathlib import Path

        folder = Path(args.export).expanduser().resolve().parent
        if not folder.is_dir():
            raise UsageError(f"--export {args.export}: the folder {folder} does not exist")
    if task == "harness":
        from mta_lab.eval.harness import check_harness

        check_harness()
    device = _device(options["device"])
    ckpt = options["ckpt"]
    target = find_target(ckpt, options["tracking_uri"])
    check_target(target, options["track"], ckpt)
    model, payload = load_model(ckpt)
    tokenizer = checkpoint_tokenizer(payload, ckpt, model.config.vocab_size)
    lm = TorchLM(model, eos_id=tokenizer.eos_id, batch_size=options["batch_size"], device=device,
               dtype=options["dtype"])

    started = time.perf_counter()
    bar = _progress_bar()  # started at the first finished batch: an error before that prints only its message
    bar_task = bar.add_task(f"eval {task} ({device})", total=None, rate="")

    def progress(n: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.advance(bar_task, n)
        done = bar.tasks[0].completed
        bar.update(bar_task, rate=f"{done / max(time.perf_counter() - started, 1e-9):.1f} samples/s")

    def total(n: int) -> None:
        bar.update(bar_task, total=n)

    try:
        result = evaluate(task, options, lm, tokenizer, payload.get("data"), progress=progress, total=total)
    finally:
        if bar.live.is_started:
            bar.stop()
    elapsed = time.perf_counter() - started
    if not result.settings:
        raise EvalError(f"eval {task}: no setting was evaluated")
    result.info |= {"ckpt": ckpt, "step": payload.get("step"), "device": device,
                    "dtype": str(lm.dtype).removeprefix("torch."), "seconds": elapsed,
                    "samples_per_s": len(result.samples) / elapsed if elapsed > 0 else math.nan}
    if args.export:
        result.export(args.export)
    run_id = record([result], target, options["track"], ckpt=ckpt, step=payload.get("step"))
    out = {**result.to_dict(), "mlflow_run_id": run_id, "tracking_uri": target.uri if run_id else None,
           "export": args.export}
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    _print(result, run_id, target.uri, args.export)
    return 0


def _print(result, run_id: str | None, uri: str | None, export: str | None) -> None:
    from rich.table import Table

    console = Console()
    table = Table(title=f"eval {result.task}")
    keys = [k for k in result.settings[0] if k not in result.metric_keys] + list(result.metric_keys)
    for key in keys:
        table.add_column(key, justify="right")
    for row in result.settings:
        table.add_row(*[f"{row[k]:.4f}" if isinstance(row.get(k), float) and k in result.metric_keys
                        else str(row.get(k, "")) for k in keys])
    console.print(table)
    summary = ", ".join(f"{k} = {v:.4f}" for k, v in result.summary.items())
    console.print(f"[bold]{result.task}[/]: {summary} ({len(result.samples)} samples in {result.info['seconds']:.1f}s "
                  f"= {result.info['samples_per_s']:.1f} samples/s on {result.info['device']})", highlight=False)
    if run_id:
        console.print(f"[dim]logged to MLflow run {run_id} ({uri})[/]", highlight=False)
    else:
        console.print("[dim]not recorded in MLflow (no run for this checkpoint, or track=false)[/]", highlight=False)
    if export:
        console.print(f"[dim]samples written to {export}[/]", highlight=False)


def parse_options(items: list[str]) -> dict:
    options = parse_key_values(items, TOY_DEFAULTS, usage=TOY_USAGE, raw_keys=("ckpt", "device"))
    if not options["ckpt"]:
        raise UsageError(f"ckpt= is required; usage: mta-lab eval toy {TOY_USAGE}")
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
