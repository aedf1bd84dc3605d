"""Decoding speed: prefill time and milliseconds per new token, eager (growing cache) against CUDA-graph decoding
(static cache, one captured step replayed per token; `mta_lab/model/generate.py`).

One process, the configurations one after another. Random weights and random prompt tokens (greedy decoding of
a random model costs what a trained one does); the model in bfloat16 on GPU. Per-token time is the steady state:
the decode time of 2N new tokens minus that of N, over N (so the graph's capture, in both runs, cancels out), each
the fastest of `repeats` runs. A difference that is not positive (timer noise above N tokens' decode, seen on a busy
CPU with N=3) is reported as such, never as a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mta_lab.bench.train_bench import attention_spec, failures_recorded, write_json
from mta_lab.model.config import load_model_preset
from mta_lab.model.generate import generate
from mta_lab.model.transformer import build_model

MODES = ("eager", "graph")


@dataclass
class DecodeBenchResult:
    model: str
    attention: str
    mode: str  # eager | graph
    batch_size: int
    context: int  # prompt tokens
    new_tokens: int  # N (the runs decode N and 2N)
    prefill_ms: float | None
    ms_per_token: float | None
    cache_gib: float | None
    status: str  # ok | oom | needs CUDA | noisy: ... | error: ...


def build(model_name: str, attention_name: str, *, max_len: int, device: torch.device) -> torch.nn.Module:
    """A random-weight model made on `device` (bfloat16 on GPU), its context at least max_len."""
    config = load_model_preset(model_name, max_seq_len=max(max_len, load_model_preset(model_name).max_seq_len))
    torch.manual_seed(0)
    with device:
        model = build_model(config, attention_spec(attention_name))
    return model.to(torch.bfloat16) if device.type == "cuda" else model


def bench_one(model: torch.nn.Module, model_name: str, attention_name: str, *, mode: str, batch_size: int,
              context: int, new_tokens: int, repeats: int = 3, prefill_chunk: int | None = None) -> DecodeBenchResult:
    result = DecodeBenchResult(model_name, attention_name, mode, batch_size, context, new_tokens, None, None, None,
                               "ok")
    device = next(model.parameters()).device
    if mode == "graph" and device.type != "cuda":
        result.status = "needs CUDA"
        return result
    with failures_recorded(result, device):
        prompt = torch.randint(0, model.config.vocab_size, (batch_size, context), device=device)
        graph = mode == "graph"
        generate(model, prompt[:, :8], 4, temperature=0.0, graph=graph)  # lazy library set-up
        run = dict(temperature=0.0, graph=graph, prefill_chunk=prefill_chunk)
        short = [generate(model, prompt, new_tokens, **run) for _ in range(repeats)]
        long = [generate(model, prompt, 2 * new_tokens, **run) for _ in range(repeats)]
        result.prefill_ms = 1000 * min(g.prefill_s for g in short + long)
        result.cache_gib = long[0].cache_bytes / 2**30
        step_s = (min(g.decode_s for g in long) - min(g.decode_s for g in short)) / new_tokens
        if step_s > 0:
            result.ms_per_token = 1000 * step_s
        else:
            result.status = f"noisy: {2 * new_tokens} tokens decoded no slower than {new_tokens}; raise new_tokens"
    return result


def write_report(results: list[DecodeBenchResult], out_dir: Path, *, tag: str, command: str, settings: dict) -> Path:
    payload = write_json(results, out_dir, tag=tag, command=command, settings=settings)
    lines = [f"# Decoding speed: {tag}", "", f"Command: `{command}`", "", f"Environment: {payload['environment']}",
             "", "ms/token: steady-state time of one greedy decoding step of the whole batch; vs transformer: the "
             "Transformer's ms/token of the same model, mode, batch and context over this row's.", "",
             markdown_table(results), ""]
    path = out_dir / f"{tag}.md"
    path.write_text("\n".join(lines))
    return path


def markdown_table(results: list[DecodeBenchResult]) -> str:
    key = lambda r: (r.model, r.mode, r.batch_size, r.context)  # noqa: E731
    baseline = {key(r): r for r in results if r.attention == "transformer" and r.ms_per_token}
    rows = ["| model | attention | mode | batch | context | prefill ms | ms/token | vs transformer | cache GiB "
            "| status |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = baseline.get(key(r))
        ratio = f"{r.ms_per_token / base.ms_per_token:.2f}x" if base and r.ms_per_token else "-"
        rows.append(f"| {r.model} | {r.attention} | {r.mode} | {r.batch_size} | {r.context} | {_fmt(r.prefill_ms)} | "
                    f"{_fmt(r.ms_per_token, '.2f')} | {ratio} | {_fmt(r.cache_gib, '.2f')} | {r.status} |")
    return "\n".join(rows)


def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)
