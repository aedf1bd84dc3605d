"""Model-level training throughput: tokens/s, MFU and peak memory of a plain training loop.

One process, the configurations one after another, so ratios between them are measured in one run.
Random tokens (the data pipeline is not what is measured); AdamW (fused on GPU), bf16 autocast on GPU,
optional torch.compile per transformer block. A configuration that runs out of memory is recorded as OOM.
"""

from __future__ import annotations

import gc
import json
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from mta_lab.attention.layers import resolved_backends
from mta_lab.attention.presets import load_preset
from mta_lab.model.accounting import count_parameters, flops_per_token
from mta_lab.model.config import load_model_preset
from mta_lab.model.transformer import build_model
from mta_lab.train.callbacks import detect_peak_flops
from mta_lab.train.config import OptimConfig
from mta_lab.train.optim import build_optimizer


@dataclass
class TrainBenchResult:
    model: str
    attention: str
    params: int
    batch_size: int
    seq_len: int
    steps: int
    tokens_per_s: float | None
    step_ms: float | None
    mfu: float | None
    peak_mem_gib: float | None
    status: str  # ok | oom | error: ...
    backends: str | None = None  # what the attention layers ran (attention.layers.resolved_backends)


def attention_spec(label: str):
    """The attention spec of a bench label: a preset name, or PRESET@BACKEND to pin the op's backend."""
    name, _, backend = label.partition("@")
    spec = load_preset(name)
    return replace(spec, backend=backend) if backend else spec


def bench_one(model_name: str, attention_name: str, *, batch_size: int, seq_len: int, steps: int, warmup: int,
              compile_model: bool, device: torch.device, peak_flops: float | None) -> TrainBenchResult:
    config = load_model_preset(model_name, max_seq_len=max(seq_len, load_model_preset(model_name).max_seq_len))
    spec = attention_spec(attention_name)
    params = count_parameters(config, spec).total
    flops = flops_per_token(config, spec, seq_len).train
    result = TrainBenchResult(model_name, attention_name, params, batch_size, seq_len, steps, None, None, None,
                              None, "ok")
    with failures_recorded(result, device):
        measured = _measure(config, spec, batch_size=batch_size, seq_len=seq_len, steps=steps, warmup=warmup,
                            compile_model=compile_model, device=device)
        result.step_ms, result.peak_mem_gib, result.backends = measured
        result.tokens_per_s = batch_size * seq_len / (result.step_ms / 1000)
        if peak_flops:
            result.mfu = result.tokens_per_s * flops / peak_flops
    return result


@contextmanager
def failures_recorded(result, device: torch.device):
    """A configuration's failure goes into `result.status` ("oom" or "error: ..."), so one failing configuration
    does not lose the others; memory is released either way."""
    try:
        yield
    except torch.OutOfMemoryError:
        result.status = "oom"
    except Exception as err:
        result.status = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measure(config, spec, *, batch_size: int, seq_len: int, steps: int, warmup: int, compile_model: bool,
             device: torch.device) -> tuple[float, float | None, str | None]:
    """(milliseconds per training step, peak GiB allocated, the attention backends the layers ran) of `steps` steps
    after `warmup` steps."""
    torch.manual_seed(0)
    model = build_model(config, spec).to(device)
    if compile_model:
        for block in model.layers:
            block.compile()
    optimizer = build_optimizer(model, OptimConfig(), fused=device.type == "cuda")
    tokens = torch.randint(0, config.vocab_size, (batch_size, seq_len + 1), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    return 1000 * (time.perf_counter() - start) / steps, peak, resolved_backends(model)


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def write_json(results: list, out_dir: Path, *, tag: str, command: str, settings: dict) -> dict:
    """`<out_dir>/<tag>.json`: the command, settings, environment, time and every result row; returns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "settings": settings, "environment": environment(),
               "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": [asdict(r) for r in results]}
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=2))
    return payload


def write_report(results: list[TrainBenchResult], out_dir: Path, *, tag: str, command: str, settings: dict) -> Path:
    payload = write_json(results, out_dir, tag=tag, command=command, settings=settings)
    lines = [f"# Training throughput: {tag}", "", f"Command: `{command}`", "",
             f"Environment: {payload['environment']}", "", markdown_table(results), ""]
    path = out_dir / f"{tag}.md"
    path.write_text("\n".join(lines))
    return path


def markdown_table(results: list[TrainBenchResult]) -> str:
    baseline = {r.model: r for r in results if r.attention == "transformer" and r.tokens_per_s}
    rows = ["| model | attention | params | batch x ctx | tokens/s | vs transformer | step ms | MFU | peak GiB | "
            "mem vs transformer | backends | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = baseline.get(r.model)
        speed = f"{r.tokens_per_s / base.tokens_per_s:.3f}x" if base and r.tokens_per_s else "-"
        mem = (f"{r.peak_mem_gib / base.peak_mem_gib:.2f}x" if base and r.peak_mem_gib and base.peak_mem_gib
               else "-")
        rows.append(
            f"| {r.model} | {r.attention} | {r.params:,} | {r.batch_size} x {r.seq_len} | "
            f"{_fmt(r.tokens_per_s, ',.0f')} | {speed} | {_fmt(r.step_ms, '.1f')} | "
            f"{_fmt(r.mfu and 100 * r.mfu, '.1f')}{'%' if r.mfu else ''} | {_fmt(r.peak_mem_gib, '.1f')} | {mem} | "
            f"{r.backends or '-'} | {r.status} |"
        )
    return "\n".join(rows)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_flops_for(device: torch.device, override: float | None) -> float | None:
    return override or (detect_peak_flops() if device.type == "cuda" else None)
