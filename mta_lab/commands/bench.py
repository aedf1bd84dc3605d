"""`mta-lab bench train|attention|decode|rewrite ...`: model-level throughput, MFU and memory, the op benchmark and
decoding speed, written under reports/bench/; `bench tune-triton|conv-parts|profile`: the GPU kernel tools (tile
search, conv pieces, one profiled training step)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from mta_lab.commands.options import parse_key_values
from mta_lab.errors import UsageError

USAGE = ("model=300m,880m attention=transformer,mta,talking_heads,diff (PRESET@BACKEND pins a backend) "
         "[batch_size=2] [seq_len=2048] [steps=30] "
         "[warmup=5] [compile=true] [peak_flops=FLOP/s] [out=reports/bench] [tag=NAME]")
DEFAULTS = {"model": "tiny", "attention": "transformer,mta,talking_heads,diff", "batch_size": 2, "seq_len": 256,
            "steps": 20, "warmup": 3, "compile": False, "peak_flops": None, "out": "reports/bench", "tag": None}

ATTENTION_USAGE = ("[configs=kq_pre,talking_heads,paper (or toy)] [seq_lens=1024,2048,4096,8192,16384,32768] [batch=1] "
                   "[heads=16] [head_dim=96] [dtype=bf16|fp16|fp32] [backends=all|sdpa,eager,NAME,...] [warmup=3] "
                   "[iters=10] [out=reports/bench] [tag=NAME] [device=auto|cpu|cuda[:N]] [plot=true]")
ATTENTION_DEFAULTS = {"configs": "kq_pre,talking_heads,paper", "seq_lens": "1024,2048,4096,8192,16384,32768",
                      "batch": 1, "heads": 16, "head_dim": 96, "dtype": "bf16", "backends": "all", "warmup": 3,
                      "iters": 10, "out": "reports/bench", "tag": None, "device": "auto", "plot": True}


DECODE_USAGE = ("model=880m attention=transformer,mta,talking_heads (PRESET@BACKEND pins a backend) "
                "[contexts=2048,8192] [batches=1,16] [new_tokens=32] [modes=eager,graph] [prefill_chunk=N] "
                "[out=reports/bench] [tag=NAME]")
DECODE_DEFAULTS = {"model": "tiny", "attention": "transformer,mta", "contexts": "128", "batches": "1",
                   "new_tokens": 16, "modes": "eager,graph", "prefill_chunk": None, "out": "reports/bench",
                   "tag": None}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks: training throughput / MFU / memory (results in reports/bench)")
    kinds = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    train = kinds.add_parser("train", help="tokens/s, MFU and peak memory of model x attention presets",
                             description=f"mta-lab bench train {USAGE}. Comma lists run one after another in "
                             "one process; ratios to the Transformer of the same size are in the table.")
    train.add_argument("options", nargs="*", metavar="KEY=VALUE", help=USAGE)
    train.set_defaults(handler=run_train)
    attention = kinds.add_parser("attention", help="fwd/bwd time and peak memory of the MTA op per backend vs SDPA",
                                 description=f"mta-lab bench attention {ATTENTION_USAGE}. One table per op config: "
                                 "SDPA, the eager reference and every registered backend that accepts the config, "
                                 "over the sequence lengths, with ratios to SDPA and the error against eager.")
    attention.add_argument("options", nargs="*", metavar="KEY=VALUE", help=ATTENTION_USAGE)
    attention.set_defaults(handler=run_attention)
    decode = kinds.add_parser("decode", help="prefill ms and ms per new token, eager vs CUDA-graph decoding",
                              description=f"mta-lab bench decode {DECODE_USAGE}. Greedy decoding of random prompts "
                              "by random-weight models (bf16 on GPU); modes: eager (growing cache) and graph (static "
                              "cache, one CUDA graph replayed per token; CUDA only); prefill_chunk=N prefills N "
                              "prompt tokens at a time through the cache (long prompts whose full forward would not "
                              "fit). Ratios to the Transformer of the same model, mode, batch and context.")
    decode.add_argument("options", nargs="*", metavar="KEY=VALUE", help=DECODE_USAGE)
    decode.set_defaults(handler=run_decode)
    rewrite = kinds.add_parser("rewrite", help="rewrite a bench attention report (table, goals, plot) from its JSON",
                               description="mta-lab bench rewrite FILE.json [...]: rewrites FILE.md and FILE.png "
                               "beside each saved `bench attention` JSON, e.g. one a time limit cut short (its "
                               "JSON is saved after every sequence length, without the plot).")
    rewrite.add_argument("files", nargs="+", type=Path, metavar="FILE.json")
    rewrite.set_defaults(handler=run_rewrite)
    for name, (_, summary, add_options) in GPU_TOOLS.items():
        # The options live here, so that `--help` imports no torch; the tool's module runs them (needs CUDA).
        tool = kinds.add_parser(name, help=summary, description=summary)
        add_options(tool)
        tool.set_defaults(handler=run_gpu_tool, tool=name)


def tune_triton_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-lens", default="4096", help="comma-separated sequence lengths (default: 4096)")
    parser.add_argument("--shapes", help="comma-separated names of mta_lab/bench/tune_triton.py's SHAPES "
                        "(default: all)")
    parser.add_argument("--out", default="reports/bench/triton-tune.json", help="every candidate's timings (JSON)")
    parser.add_argument("--best-out", help="write the best tiles as MTA_TRITON_BLOCKS JSON here")
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop searching a shape after this long")


def conv_parts_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--seq-lens", default="2048,4096", help="comma-separated sequence lengths")
    parser.add_argument("--kernel", default="6x11", help="c_q x c_k of the convolution (default: 6x11)")


def profile_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="880m", help="model preset (default: 880m)")
    parser.add_argument("--attention", default="mta", help="attention preset or PRESET@BACKEND (default: mta)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--rows", type=int, default=30, help="kernels shown")


# name: (module under mta_lab.bench with run(opts), what it does, its options). Each needs a CUDA GPU.
GPU_TOOLS = {
    "tune-triton": ("tune_triton", "tile search for the triton backend's kernels, with a correctness check (GPU)",
                    tune_triton_options),
    "conv-parts": ("conv_parts", "the kq convolution's pieces: cuDNN against the triton_conv kernels (GPU)",
                   conv_parts_options),
    "profile": ("profile_step", "one training step under torch.profiler, kernels by CUDA time (GPU)",
                profile_options),
}


def run_gpu_tool(args: argparse.Namespace) -> int:
    import importlib

    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"mta-lab bench {args.tool} needs a CUDA GPU, and torch sees none here; run it on a GPU "
                         "machine")
    return importlib.import_module(f"mta_lab.bench.{GPU_TOOLS[args.tool][0]}").run(args)


def parse_options(items: list[str]) -> dict:
    return parse_key_values(items, DEFAULTS, usage=USAGE, raw_keys=("model", "attention", "out", "tag"))


def run_train(args: argparse.Namespace) -> int:
    from mta_lab.bench.train_bench import (
        attention_spec,
        bench_one,
        default_device,
        markdown_table,
        peak_flops_for,
        write_report,
    )
    from mta_lab.model.config import load_model_preset

    options = parse_options(args.options)
    models, attentions = options["model"].split(","), options["attention"].split(",")
    for name in models:
        load_model_preset(name)  # unknown names fail before any work
    for name in attentions:
        attention_spec(name)
    device = default_device()
    peak = peak_flops_for(device, options["peak_flops"])
    console = Console()
    results = []
    tag = options["tag"] or f"train-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "mta-lab bench train " + " ".join(shlex.quote(a) for a in sys.argv[3:])
    with Progress(console=console) as progress:
        task = progress.add_task("bench train", total=len(models) * len(attentions))
        for model in models:
            for attention in attentions:
                progress.update(task, description=f"{model} / {attention}")
                results.append(bench_one(model, attention, batch_size=options["batch_size"],
                                         seq_len=options["seq_len"], steps=options["steps"],
                                         warmup=options["warmup"], compile_model=bool(options["compile"]),
                                         device=device, peak_flops=peak))
                # Rewritten after every configuration: a run cut short keeps what it measured.
                path = write_report(results, Path(options["out"]), tag=tag, command=command, settings=options)
                progress.advance(task)
    console.print(markdown_table(results))
    console.print(f"written: {path} and {path.with_suffix('.json')}")
    return 0


def parse_decode_options(items: list[str]) -> dict:
    """`bench decode`'s options, checked: names known, lists of positive integers, modes eager/graph."""
    from mta_lab.bench.decode_bench import MODES
    from mta_lab.bench.train_bench import attention_spec
    from mta_lab.model.config import load_model_preset

    options = parse_key_values(items, DECODE_DEFAULTS, usage=DECODE_USAGE,
                               raw_keys=("model", "attention", "contexts", "batches", "modes", "out", "tag"))
    for key in ("model", "attention", "modes"):
        options[key] = [v.strip() for v in str(options[key]).split(",")]
    for key in ("contexts", "batches"):
        values = [v.strip() for v in str(options[key]).split(",")]
        if not all(v.isdigit() and int(v) > 0 for v in values):
            raise UsageError(f"{key}={options[key]!r}: expected a comma-separated list of positive integers")
        options[key] = [int(v) for v in values]
    if isinstance(options["new_tokens"], bool) or not isinstance(options["new_tokens"], int) \
            or options["new_tokens"] < 1:
        raise UsageError(f"new_tokens={options['new_tokens']!r}: expected a positive integer")
    chunk = options["prefill_chunk"]
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise UsageError(f"prefill_chunk={chunk!r}: expected a positive integer (tokens per prefill chunk)")
    unknown = [m for m in options["modes"] if m not in MODES]
    if unknown:
        raise UsageError(f"modes: unknown {', '.join(map(repr, unknown))}; use some of {', '.join(MODES)}")
    for name in options["model"]:
        load_model_preset(name)  # unknown names fail before any work
    for name in options["attention"]:
        attention_spec(name)
    return options


def run_decode(args: argparse.Namespace) -> int:
    from mta_lab.bench.decode_bench import bench_one, build, markdown_table, write_report
    from mta_lab.bench.train_bench import default_device

    options = parse_decode_options(args.options)
    device = default_device()
    console = Console()
    tag = options["tag"] or f"decode-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "mta-lab bench decode " + " ".join(shlex.quote(a) for a in args.options)
    settings = [(b, c, mode) for b in options["batches"] for c in options["contexts"] for mode in options["modes"]]
    max_len = max(options["contexts"]) + 2 * options["new_tokens"]
    results = []
    with Progress(console=console) as progress:
        total = len(options["model"]) * len(options["attention"]) * len(settings)
        task = progress.add_task("bench decode", total=total)
        for name in options["model"]:
            for attention in options["attention"]:  # one model per preset, every setting on it
                model = build(name, attention, max_len=max_len, device=device)
                for batch, context, mode in settings:
                    progress.update(task, description=f"{name} / {attention} / {mode} / {batch} x {context}")
                    results.append(bench_one(model, name, attention, mode=mode, batch_size=batch, context=context,
                                             new_tokens=options["new_tokens"],
                                             prefill_chunk=options["prefill_chunk"]))
                    path = write_report(results, Path(options["out"]), tag=tag, command=command, settings=options)
                    progress.advance(task)
                del model
    console.print(markdown_table(results), markup=False, highlight=False, soft_wrap=True)
    console.print(f"written: {path} and {path.with_suffix('.json')}")
    return 0


def parse_attention_options(items: list[str]) -> dict:
    """The options of `bench attention`, checked: lists split, lengths and sizes positive integers."""
    from mta_lab.bench.attention_bench import BASELINE, CONFIGS, DTYPES, load_backends, registered_names

    options = parse_key_values(items, ATTENTION_DEFAULTS, usage=ATTENTION_USAGE,
                               raw_keys=("configs", "seq_lens", "dtype", "backends", "out", "tag", "device"))

    def names(key: str) -> list[str]:
        values = [v.strip() for v in str(options[key]).split(",")]
        if not all(values):
            raise UsageError(f"{key}={options[key]!r}: expected a comma-separated list of names")
        return values

    options["configs"] = names("configs")
    unknown = [c for c in options["configs"] if c not in CONFIGS]
    if unknown:
        raise UsageError(f"configs: unknown {', '.join(map(repr, unknown))}; known: {', '.join(CONFIGS)}")
    seq_lens = []
    for text in str(options["seq_lens"]).split(","):
        text = text.strip()
        scale = 1024 if text[-1:] in ("k", "K") else 1
        digits = text[:-1] if scale > 1 else text
        if not digits.isdigit() or int(digits) <= 0:
            raise UsageError(f"seq_lens={options['seq_lens']!r}: {text!r} is not a positive integer "
                             "(like 4096 or 4K)")
        seq_lens.append(int(digits) * scale)
    options["seq_lens"] = seq_lens
    for key in ("batch", "heads", "head_dim", "iters", "warmup"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "warmup" else 1):
            bound = "a non-negative" if key == "warmup" else "a positive"
            raise UsageError(f"{key}={value!r}: expected {bound} integer")
    if options["dtype"] not in DTYPES:
        raise UsageError(f"dtype={options['dtype']!r}: expected one of {', '.join(DTYPES)}")
    if not isinstance(options["plot"], bool):
        raise UsageError(f"plot={options['plot']!r}: expected true or false")
    load_backends()
    options["backends"] = names("backends")
    if options["backends"] != ["all"]:
        known = [BASELINE, *registered_names()]
        unknown = [b for b in options["backends"] if b not in known]
        if unknown:
            raise UsageError(f"backends: unknown {', '.join(map(repr, unknown))}; use all or some of: "
                             f"{', '.join(known)}")
    return options


def run_attention(args: argparse.Namespace) -> int:
    from mta_lab.bench.attention_bench import markdown_tables, resolve_device, run_bench, run_count, write_report

    options = parse_attention_options(args.options)
    device = resolve_device(options["device"])
    shape = dict(heads=options["heads"], head_dim=options["head_dim"], dtype_name=options["dtype"], device=device)
    console = Console()
    tag = options["tag"] or f"attention-{device.type}-{options['dtype']}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "mta-lab bench attention " + " ".join(shlex.quote(a) for a in args.options)
    with Progress(console=console) as progress:
        total = run_count(options["configs"], options["backends"], seq_lens=options["seq_lens"], **shape)
        task = progress.add_task("bench attention", total=total)

        def on_run(description: str) -> None:
            if progress.tasks[task].description != "bench attention":
                progress.advance(task)
            progress.update(task, description=description)

        def save(results: list) -> None:  # after each length: a run cut short keeps what it measured
            write_report(results, Path(options["out"]), tag=tag, command=command, settings=options, device=device,
                         plot=False)

        results = run_bench(options["configs"], options["backends"], seq_lens=options["seq_lens"],
                            batch=options["batch"], warmup=options["warmup"],
                            iters=options["iters"], on_run=on_run, on_length=save, **shape)
        progress.update(task, completed=total, description="bench attention: done")
    path = write_report(results, Path(options["out"]), tag=tag, command=command, settings=options, device=device,
                        plot=options["plot"])
    console.print(markdown_tables(results), markup=False, highlight=False, soft_wrap=True)
    goals = path.read_text().split("## Goals", 1)[1].split("![", 1)[0].strip()
    console.print(goals, markup=False, highlight=False, soft_wrap=True)
    console.print(f"written: {path} and {path.with_suffix('.json')}")
    return 0


def run_rewrite(args: argparse.Namespace) -> int:
    from mta_lab.bench.attention_bench import rewrite_report

    console = Console()
    for path in args.files:
        console.print(f"written: {rewrite_report(path)}")
    return 0
