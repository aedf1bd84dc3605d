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

HELP = "evaluate a trained checkpoint: toy, niah, babilong, lambada, zeroshot, harness"
CKPT = "ckpt=<run dir | final/model.pt | checkpoints/*.ckpt>"
COMMON = {"ckpt": None, "device": "auto", "batch_size": 8, "track": "auto", "tracking_uri": None}
COMMON_USAGE = "device=auto|cpu|cuda batch_size=8 track=auto|new|false tracking_uri=URI"
LONG = {"haystack": None, "cache_dir": None, "seed": 0}
TASKS = {
    "niah": ("multi-needle needle-in-a-haystack, generated offline (accuracy per context, needles, depth)",
             {**COMMON, **LONG, "contexts": "2048,4096", "needles": "2,4,6", "depths": "0,0.25,0.5,0.75,1",
              "samples": 50, "digits": 7},
             "contexts=2048,4096 needles=2,4,6 depths=0,0.25,0.5,0.75,1 samples=50 digits=7 seed=0 haystack=PATH"),
    "babilong": ("bAbI QA1-QA5 facts spread through distractor text (accuracy per task and length)",
                 {**COMMON, **LONG, "tasks": "qa1,qa2,qa3,qa4,qa5", "lengths": "0,1024,2048,4096", "samples": 50,
                  "facts": 0},
                 "tasks=qa1,qa2,qa3,qa4,qa5 lengths=0,1024,2048,4096 samples=50 seed=0 facts=0 (0: per task, "
                 "qa1 8, qa2 10, qa3 12, qa5 8; qa4 has 2) haystack=PATH"),
    "lambada": ("LAMBADA last-word perplexity and accuracy from a local file", {**COMMON, "data.path": None},
                "data.path=FILE.jsonl (a \"text\" field per line) or FILE.txt (one passage per line)"),
    "zeroshot": ("multiple choice from local JSONL files (acc, acc_norm)", {**COMMON, "data.path": None},
                 'data.path=FILE.jsonl or DIR of *.jsonl ({"context", "choices", "gold", "fewshot"?} per line)'),
    "harness": ("lm-evaluation-harness tasks over the checkpoint (optional extra `eval`)",
                {**COMMON, "tasks": None, "include_path": None, "num_fewshot": None, "limit": None},
                "tasks=hellaswag,piqa include_path=DIR (your task YAMLs) num_fewshot=N limit=N"),
}
RAW = ("ckpt", "device", "track", "tracking_uri", "haystack", "cache_dir", "contexts", "needles", "depths", "tasks",
       "lengths", "data.path", "include_path")
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
    for name, (help_text, _, usage) in TASKS.items():
        p = kinds.add_parser(name, help=help_text,
                             description=f"mta-lab eval {name} {CKPT} {usage} {COMMON_USAGE}. {help_text}.")
        p.add_argument("options", nargs="*", metavar="KEY=VALUE", help=f"{usage} {COMMON_USAGE}")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        p.add_argument("--export", metavar="FILE", default=None,
                       help="write every sample as JSONL (prompt, expected answer, output, generator metadata)")
        p.set_defaults(handler=run_task)


# ---------------------------------------------------------------- options
def _ints(key: str, text, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UsageError(f"{key}={text!r}: must be comma-separated integers, e.g. {key}=1024,2048") from None
    if not values or any(v < minimum for v in values):
        raise UsageError(f"{key}={text!r}: give integers >= {minimum}, comma-separated")
    return values


def _floats(key: str, text) -> list[float]:
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UsageError(f"{key}={text!r}: must be comma-separated numbers in [0, 1], e.g. {key}=0,0.5,1") from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise UsageError(f"{key}={text!r}: depths are fractions of the context, each in [0, 1]")
    return values


def _positive(options: dict, key: str) -> None:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{key}={value!r}: must be a positive integer")


def parse_task_options(task: str, items: list[str]) -> dict:
    _, defaults, usage = TASKS[task]
    full_usage = f"mta-lab eval {task} {CKPT} {usage} {COMMON_USAGE}"
    options = parse_key_values(items, defaults, usage=full_usage, raw_keys=RAW)
    if not options["ckpt"]:
        raise UsageError(f"ckpt= is required; usage: {full_usage}")
    if options["device"] not in ("auto", "cpu", "cuda"):
        raise UsageError(f"device={options['device']!r}: allowed: auto, cpu, cuda")
    if options["track"] not in ("auto", "new", "false"):
        raise UsageError(f"track={options['track']!r}: allowed: auto (the checkpoint's run), new (a run linked to it), "
                         "false (record nothing)")
    _positive(options, "batch_size")
    if task == "niah":
        options["contexts"] = _ints("contexts", options["contexts"])
        options["needles"] = _ints("needles", options["needles"])
        options["depths"] = _floats("depths", options["depths"])
        _positive(options, "samples")
        _positive(options, "digits")
    elif task == "babilong":
        from mta_lab.eval.babi import TASKS as QA

        names = [t for t in str(options["tasks"]).replace(" ", "").split(",") if t]
        bad = [t for t in names if t not in QA]
        if not names or bad:
            raise UsageError(f"tasks={options['tasks']!r}: allowed: {', '.join(QA)} (comma-separated)")
        options["tasks"] = names
        options["lengths"] = _ints("lengths", options["lengths"], minimum=0)
        _positive(options, "samples")
        if isinstance(options["facts"], bool) or not isinstance(options["facts"], int) or not 0 <= options["facts"]:
            raise UsageError(f"facts={options['facts']!r}: must be an integer >= 0 (0: the task's default)")
        if 0 < options["facts"] < 2:
            raise UsageError(f"facts={options['facts']}: a story needs at least 2 facts")
    elif task in ("lambada", "zeroshot") and not options["data.path"]:
        raise UsageError(f"data.path= is required; usage: {full_usage}")
    elif task == "harness":
        if not options["tasks"]:
            raise UsageError(f"tasks= is required (lm-evaluation-harness task names); usage: {full_usage}")
        for key in ("num_fewshot", "limit"):
            if options[key] is not None and (isinstance(options[key], bool) or not isinstance(options[key], int)
                                             or options[key] < 0):
                raise UsageError(f"{key}={options[key]!r}: must be an integer >= 0")
    if task in ("niah", "babilong") and (isinstance(options["seed"], bool) or not isinstance(options["seed"], int)):
        raise UsageError(f"seed={options['seed']!r}: must be an integer")
    return options


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
    lm = TorchLM(model, eos_id=tokenizer.eos_id, batch_size=options["batch_size"], device=device)

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
        if task in ("niah", "babilong"):
            from mta_lab.eval.haystack import load_haystack

            need_haystack = task == "niah" or any(options["lengths"])
            haystack = load_haystack(payload.get("data"), tokenizer, haystack=options["haystack"],
                                     cache_dir=options["cache_dir"]) if need_haystack else None
            if task == "niah":
                from mta_lab.eval.niah import run_niah

                total(len(options["contexts"]) * len(options["needles"]) * len(options["depths"]) * options["samples"])
                result = run_niah(lm, tokenizer, haystack, contexts=options["contexts"], needles=options["needles"],
                                  depths=options["depths"], samples=options["samples"], seed=options["seed"],
                                  digits=options["digits"], progress=progress)
            else:
                from mta_lab.eval.babilong import run_babilong

                total(len(options["tasks"]) * len(options["lengths"]) * options["samples"])
                result = run_babilong(lm, tokenizer, haystack, tasks=options["tasks"], lengths=options["lengths"],
                                      samples=options["samples"], seed=options["seed"],
                                      facts=options["facts"] or None, progress=progress)
        elif task == "lambada":
            from mta_lab.eval.multiple_choice import run_lambada

            result = run_lambada(lm, tokenizer, options["data.path"], progress=progress)
        elif task == "zeroshot":
            from mta_lab.eval.multiple_choice import run_zeroshot

            result = run_zeroshot(lm, tokenizer, options["data.path"], progress=progress)
        else:
            from mta_lab.eval.harness import run_harness

            result = run_harness(lm, tokenizer, tasks=options["tasks"], include_path=options["include_path"],
                                 num_fewshot=options["num_fewshot"], limit=options["limit"])
    finally:
        if bar.live.is_started:
            bar.stop()
    elapsed = time.perf_counter() - started
    if not result.settings:
        raise EvalError(f"eval {task}: no setting was evaluated")
    result.info |= {"ckpt": ckpt, "step": payload.get("step"), "device": device, "seconds": elapsed,
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
