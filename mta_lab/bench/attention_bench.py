"""Op-level benchmark of the MTA op: forward, backward and peak memory of each backend against SDPA.

For every (op config, sequence length, backend) one run: the same random q, k, v and random, non-identity
kernels / mixing matrices (all requiring grad), `warmup` untimed then `iters` timed forward + backward passes
(`torch.autograd.grad` of a fixed random output gradient). On CUDA times come from CUDA events (median over the
iterations) and the peak memory is `max_memory_allocated` over the timed iterations minus what was allocated
before them (the inputs); on CPU times are `time.perf_counter` and memory is not measured.

"sdpa" is `F.scaled_dot_product_attention(is_causal=True)` on the same q, k, v: the baseline of the ratios (it
computes plain attention, not MTA). "eager" is the reference op; every other backend found in the registry
(`mta_lab.attention.backends`) that runs on the device and implements the config is measured too, and its output
and input gradients are compared with eager's when eager ran at that length.

A run never ends the table: a run of a materialising backend (eager, stacked, triton_mix) whose T x T maps would not fit
is skipped with an estimate, an out-of-memory error is recorded as OOM, any other error as "error: ...".
"""

from __future__ import annotations

import gc
import json
import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from mta_lab.errors import UsageError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BASELINE = "sdpa"
REFERENCE = "eager"
GOAL_SEQ_LEN = 4096
MEMORY_SLOPE_LIMIT = 1.2  # "memory linear in T": log-log slope of peak memory vs T at most this
EAGER_MAPS = 8  # materialised B x H x T x T float32 maps an eager forward + backward holds at once (estimate)


@dataclass(frozen=True)
class OpConfig:
    """A named call of the op: kernel sizes of the key-query convolutions, which head mixings."""

    name: str
    description: str
    kq_pre: tuple[int, int] | None = None
    kq_post: tuple[int, int] | None = None
    head_pre: bool = False
    head_post: bool = False  # one group of all heads ("full")
    goal: float | None = None  # fwd+bwd time of the fastest fused backend at T=4096, at most this x SDPA
    heads: int | None = None  # shape overrides (the toy task's), else the command's heads / head_dim
    head_dim: int | None = None


CONFIGS = {
    "kq_pre": OpConfig("kq_pre", "pre-softmax key-query conv 6x11 only", kq_pre=(6, 11), goal=4.0),
    "talking_heads": OpConfig("talking_heads", "head mixing only: head_pre HxH + head_post full (Talking heads)",
                              head_pre=True, head_post=True, goal=3.0),
    "paper": OpConfig("paper", "paper config: kq_pre 6x11 + kq_post 6x11 + head_pre HxH + head_post full",
                      kq_pre=(6, 11), kq_post=(6, 11), head_pre=True, head_post=True, goal=8.0),
    "toy": OpConfig("toy", "toy task: kq_pre 2x9, H=2, d=128", kq_pre=(2, 9), heads=2, head_dim=128),
}


@dataclass
class AttentionBenchResult:
    config: str
    backend: str
    batch: int
    heads: int
    head_dim: int
    seq_len: int
    dtype: str
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    total_ms: float | None = None
    peak_gib: float | None = None  # above the inputs; None where not measured (CPU)
    rel_err: float | None = None  # max |out - eager| / max |eager|
    grad_rel_err: float | None = None  # the same, worst over the gradients of q, k, v and the op's weights
    status: str = "ok"  # ok | OOM | skipped: ... | error: ...
    fwd_samples_ms: list[float] = field(default_factory=list)
    bwd_samples_ms: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------- backends


def load_backends() -> None:
    """Import the registry's backend modules; one that cannot be imported here is not measured (a warning says why)."""
    from mta_lab.attention.backends import unavailable

    for name, reason in unavailable().items():
        warnings.warn(f"bench attention: backend {name!r} {reason}", stacklevel=2)


def ordered_backends() -> list:
    """The installed backends in the order of `auto`'s preference (its policy's rules), the others after."""
    from mta_lab.attention.backends import backends
    from mta_lab.attention.backends.policy import preference

    return sorted(backends(), key=lambda b: preference(b.name))


def registered_names() -> list[str]:
    return [b.name for b in ordered_backends()]


def select_backends(requested: list[str], config_options: dict, device: torch.device) -> list[tuple[str, str | None]]:
    """(name, reason it cannot run or None) in run order: sdpa, eager, then the others in `auto`'s preference.

    requested: ["all"] (every installed backend that runs on the device and implements the call) or names.
    """
    registry = {b.name: b for b in ordered_backends()}
    everything = requested == ["all"]
    names = [BASELINE, *registry] if everything else list(requested)
    names = sorted(dict.fromkeys(names), key=lambda n: (n != BASELINE, n != REFERENCE))  # stable otherwise
    chosen = []
    for name in names:
        if name == BASELINE:
            chosen.append((name, None))
            continue
        backend = registry[name]
        reason = None
        if not backend.runs_on(device):
            reason = f"skipped: does not run on {device.type}"
        elif not backend.implements(config_options):
            reason = "skipped: does not accept this config"
        if reason is None or not everything:
            chosen.append((name, reason))
    return chosen


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: object) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def materialises(name: str) -> bool:
    """The backend holds B x H x T x T maps (eager, stacked, triton_mix): quadratic memory by design, so it is
    skipped when the maps cannot fit and left out of the linear-memory goal. SDPA and unknown names: no."""
    from mta_lab.attention.backends import backends

    return any(b.materialises for b in backends() if b.name == name)


def backend_fn(name: str) -> Callable[..., torch.Tensor]:
    if name == BASELINE:
        return sdpa
    from mta_lab.attention.backends import backends

    return {b.name: b for b in backends()}[name].fn


# ---------------------------------------------------------------------------------------------------- inputs


def make_inputs(config: OpConfig, *, batch: int, heads: int, head_dim: int, seq_len: int, dtype: torch.dtype,
                device: torch.device, seed: int = 0) -> tuple[list[torch.Tensor], dict[str, torch.Tensor | None]]:
    """Random q, k, v (B, H, T, d) and the config's weights: identity plus noise (non-identity, well scaled)."""
    gen = torch.Generator().manual_seed(seed + seq_len)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    qkv = [randn(batch, heads, seq_len, head_dim).to(device, dtype) for _ in range(3)]

    def kernel(size: tuple[int, int] | None) -> torch.Tensor | None:
        if size is None:
            return None
        c_q, c_k = size
        weight = 0.05 * randn(heads, c_q, c_k)
        weight[:, c_q - 1, (c_k - 1) // 2] += 1.0  # the identity tap (pad_key="both")
        return weight

    def mixing(n: int) -> torch.Tensor:
        return torch.eye(n) + randn(n, n) / math.sqrt(4 * n)

    weights = {
        "kq_pre": kernel(config.kq_pre),
        "head_pre": mixing(heads) if config.head_pre else None,
        "kq_post": kernel(config.kq_post),
        "head_post": mixing(heads).unsqueeze(0) if config.head_post else None,
    }
    weights = {k: (None if w is None else w.to(device, dtype)) for k, w in weights.items()}
    return qkv, weights


def op_options(weights: dict[str, torch.Tensor | None]) -> dict:
    """The op's keyword arguments, as `resolve` and `Backend.implements` see them in the model."""
    return dict(weights, pad_key="both", dropout_p=0.0)


def eager_bytes(batch: int, heads: int, seq_len: int) -> int:
    return EAGER_MAPS * batch * heads * seq_len * seq_len * 4


# ---------------------------------------------------------------------------------------------------- one run


def _rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    value, ref = value.float(), ref.float()
    scale = ref.abs().max().item()
    diff = (value - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


def run_one(name: str, config: OpConfig, qkv: list[torch.Tensor], weights: dict, grad_out: torch.Tensor, *,
            warmup: int, iters: int, device: torch.device, dtype_name: str,
            reference: tuple[torch.Tensor, list[torch.Tensor]] | None, keep_output: bool = False
            ) -> tuple[AttentionBenchResult, tuple[torch.Tensor, list[torch.Tensor]] | None]:
    """Measure one backend; with keep_output its (output, gradients) come back (the eager reference)."""
    batch, heads, seq_len, head_dim = qkv[0].shape
    result = AttentionBenchResult(config.name, name, batch, heads, head_dim, seq_len, dtype_name)
    cuda = device.type == "cuda"
    kept = None
    if materialises(name) and cuda:
        need = eager_bytes(batch, heads, seq_len)
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            result.status = f"skipped: would need ~{need / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free)"
            return result, None
    fn = backend_fn(name)
    try:
        leaves = [t.detach().clone().requires_grad_(True) for t in qkv]
        mta_weights = {} if name == BASELINE else {
            k: (None if w is None else w.detach().clone().requires_grad_(True)) for k, w in weights.items()}
        inputs = leaves + [w for w in mta_weights.values() if w is not None]
        kwargs = {} if name == BASELINE else op_options(mta_weights)

        def step() -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
            out = fn(*leaves, **kwargs)
            return out, torch.autograd.grad(out, inputs, grad_out)

        for _ in range(warmup):
            step()
        baseline = 0
        if cuda:
            torch.cuda.synchronize(device)
            gc.collect()
            baseline = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        out = grads = None
        marks = []
        for _ in range(iters):
            out = grads = None  # the previous iteration's tensors are not held during this one
            if cuda:
                events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
                events[0].record()
                out = fn(*leaves, **kwargs)
                events[1].record()
                grads = torch.autograd.grad(out, inputs, grad_out)
                events[2].record()
                marks.append(events)
            else:
                t0 = time.perf_counter()
                out = fn(*leaves, **kwargs)
                t1 = time.perf_counter()
                grads = torch.autograd.grad(out, inputs, grad_out)
                marks.append((t0, t1, time.perf_counter()))
        if cuda:
            torch.cuda.synchronize(device)
            result.peak_gib = (torch.cuda.max_memory_allocated(device) - baseline) / 2**30
            fwd = [a.elapsed_time(b) for a, b, _ in marks]
            bwd = [b.elapsed_time(c) for _, b, c in marks]
        else:
            fwd = [1000 * (b - a) for a, b, _ in marks]
            bwd = [1000 * (c - b) for _, b, c in marks]
        result.fwd_samples_ms, result.bwd_samples_ms = fwd, bwd
        result.fwd_ms, result.bwd_ms = statistics.median(fwd), statistics.median(bwd)
        result.total_ms = statistics.median(f + b for f, b in zip(fwd, bwd, strict=True))
        if name == REFERENCE:
            reference = (out, grads)  # eager against itself: 0 by definition, shown so the column reads
        if name != BASELINE and reference is not None:
            ref_out, ref_grads = reference
            result.rel_err = _rel_err(out, ref_out)
            result.grad_rel_err = max(_rel_err(g, r) for g, r in zip(grads, ref_grads, strict=True))
        if keep_output:
            kept = (out.detach(), [g.detach() for g in grads])
    except torch.OutOfMemoryError:
        result.status = "OOM"
    except Exception as err:  # recorded, so one failing backend does not lose the table
        result.status = f"error: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
    finally:
        out = grads = leaves = inputs = mta_weights = kwargs = None
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result, kept


# ---------------------------------------------------------------------------------------------------- the table


def plan(config_names: list[str], requested: list[str], *, heads: int, head_dim: int, dtype_name: str,
         device: torch.device) -> list[tuple[OpConfig, int, int, list[tuple[str, str | None]]]]:
    """(config, heads, head_dim, backends) for each config; `implements` sees weights of the run's dtype and device."""
    out = []
    for name in config_names:
        config = CONFIGS[name]
        h, d = config.heads or heads, config.head_dim or head_dim
        _, weights = make_inputs(config, batch=1, heads=h, head_dim=d, seq_len=1, dtype=DTYPES[dtype_name],
                                 device=device)
        out.append((config, h, d, select_backends(requested, op_options(weights), device)))
    return out


def run_bench(config_names: list[str], requested: list[str], *, seq_lens: list[int], batch: int, heads: int,
              head_dim: int, dtype_name: str, warmup: int, iters: int, device: torch.device,
              on_run: Callable[[str], None] | None = None,
              on_length: Callable[[list[AttentionBenchResult]], None] | None = None) -> list[AttentionBenchResult]:
    """Every (config, length, backend) run; `on_run` before each, `on_length` with the results so far after
    each length (to save partial tables)."""
    results = []
    dtype = DTYPES[dtype_name]
    for config, h, d, chosen in plan(config_names, requested, heads=heads, head_dim=head_dim, dtype_name=dtype_name,
                                     device=device):
        for seq_len in seq_lens:
            qkv, weights = make_inputs(config, batch=batch, heads=h, head_dim=d, seq_len=seq_len, dtype=dtype,
                                       device=device)
            grad_out = torch.randn(qkv[0].shape, generator=torch.Generator().manual_seed(seq_len)).to(device, dtype)
            reference = None
            for name, reason in chosen:
                if on_run:
                    on_run(f"{config.name} T={seq_len} {name}")
                if reason is not None:
                    results.append(AttentionBenchResult(config.name, name, batch, h, d, seq_len, dtype_name,
                                                        status=reason))
                    continue
                result, kept = run_one(name, config, qkv, weights, grad_out, warmup=warmup, iters=iters,
                                       device=device, dtype_name=dtype_name, reference=reference,
                                       keep_output=name == REFERENCE)
                if kept is not None:
                    reference = kept
                results.append(result)
            del qkv, weights, grad_out, reference
            if on_length:
                on_length(results)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def run_count(config_names: list[str], requested: list[str], *, seq_lens: list[int], heads: int, head_dim: int,
              dtype_name: str, device: torch.device) -> int:
    return sum(len(chosen) * len(seq_lens) for *_, chosen in plan(
        config_names, requested, heads=heads, head_dim=head_dim, dtype_name=dtype_name, device=device))


def ratios(results: list[AttentionBenchResult]) -> dict[tuple[str, int, str], tuple[float | None, float | None]]:
    """(config, T, backend) -> (total time / SDPA's, peak memory / SDPA's) of the same config and T."""
    base = {(r.config, r.seq_len): r for r in results if r.backend == BASELINE and r.status == "ok"}
    out = {}
    for r in results:
        b = base.get((r.config, r.seq_len))
        time_ratio = r.total_ms / b.total_ms if b and r.total_ms is not None and b.total_ms else None
        mem_ratio = r.peak_gib / b.peak_gib if b and r.peak_gib is not None and b.peak_gib else None
        out[(r.config, r.seq_len, r.backend)] = (time_ratio, mem_ratio)
    return out


def memory_slope(results: list[AttentionBenchResult]) -> float | None:
    """Least-squares slope of log(peak memory) against log(T) over the measured lengths (1: linear in T)."""
    points = [(math.log(r.seq_len), math.log(r.peak_gib)) for r in results
              if r.status == "ok" and r.peak_gib is not None and r.peak_gib > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mx, my = statistics.fmean(x for x, _ in points), statistics.fmean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def goals(results: list[AttentionBenchResult], *, device_name: str, dtype_name: str) -> list[dict]:
    """One entry per config with a time goal (fastest fused backend at T=4096), and per backend memory growth."""
    ratio = ratios(results)
    conditions = "" if dtype_name == "bf16" and "H200" in device_name else (
        f" [measured: {dtype_name} on {device_name}; the goal is stated for bf16 on H200]")
    out = []
    for name in dict.fromkeys(r.config for r in results):
        config = CONFIGS[name]
        rows = [r for r in results if r.config == name]
        if config.goal is not None:
            fused = [(ratio[(name, r.seq_len, r.backend)][0], r.backend) for r in rows
                     if r.seq_len == GOAL_SEQ_LEN and r.backend not in (BASELINE, REFERENCE)
                     and ratio[(name, r.seq_len, r.backend)][0] is not None]
            eager = [ratio[(name, r.seq_len, r.backend)][0] for r in rows
                     if r.seq_len == GOAL_SEQ_LEN and r.backend == REFERENCE]
            text = f"goal ({name}): fwd+bwd within {config.goal:g}x SDPA at T={GOAL_SEQ_LEN}: "
            best = min(fused) if fused else None
            if best is None:
                status = "not measured"
                text += "not measured (no fused backend ran at this length)"
            else:
                status = "met" if best[0] <= config.goal else "not met"
                text += f"{status} ({best[1]} {best[0]:.2f}x)"
            if eager and eager[0] is not None:
                text += f"; eager {eager[0]:.2f}x"
            out.append({"config": name, "goal": f"time within {config.goal:g}x SDPA at T={GOAL_SEQ_LEN}",
                        "status": status, "best": best and {"backend": best[1], "ratio": best[0]},
                        "text": text + conditions})
        slopes = {b: memory_slope([r for r in rows if r.backend == b]) for b in dict.fromkeys(r.backend for r in rows)}
        # Materialising backends (eager, stacked, triton_mix) are quadratic by design: for reference only.
        fused = {b: v for b, v in slopes.items() if b != BASELINE and not materialises(b) and v is not None}
        others = ", ".join(f"{b} T^{v:.2f}" for b, v in slopes.items()
                           if (b == BASELINE or materialises(b)) and v is not None)
        text = f"goal ({name}): memory linear in T (peak ~ T^slope, slope <= {MEMORY_SLOPE_LIMIT:g}): "
        if not fused:
            status = "not measured"
            text += "not measured (" + ("no fused backend with a measured peak at two lengths" if any(
                v is not None for v in slopes.values()) else f"no peak memory measured on {device_name}") + ")"
        else:
            status = "met" if all(v <= MEMORY_SLOPE_LIMIT for v in fused.values()) else "not met"
            text += f"{status} (" + ", ".join(f"{b} T^{v:.2f}" for b, v in fused.items()) + ")"
        if others:
            text += f"; for reference {others}"
        out.append({"config": name, "goal": "memory linear in T", "status": status, "slopes": slopes, "text": text})
    return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _err(value: float | None) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.1e}")


def markdown_tables(results: list[AttentionBenchResult]) -> str:
    ratio = ratios(results)
    parts = []
    for name in dict.fromkeys(r.config for r in results):
        rows = [r for r in results if r.config == name]
        first = rows[0]
        parts += [f"### {name}: {CONFIGS[name].description}", "",
                  f"B={first.batch}, H={first.heads}, d={first.head_dim}, {first.dtype}", "",
                  "| T | backend | fwd ms | bwd ms | total ms | x SDPA (total) | peak GiB | x SDPA (mem) | rel err | "
                  "grad rel err | status |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            time_ratio, mem_ratio = ratio[(r.config, r.seq_len, r.backend)]
            parts.append(
                f"| {r.seq_len} | {r.backend} | {_fmt(r.fwd_ms, '.3f')} | {_fmt(r.bwd_ms, '.3f')} | "
                f"{_fmt(r.total_ms, '.3f')} | {_fmt(time_ratio, '.2f', 'x')} | {_fmt(r.peak_gib, '.3f')} | "
                f"{_fmt(mem_ratio, '.2f', 'x')} | {_err(r.rel_err)} | {_err(r.grad_rel_err)} | {r.status} |")
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------------- report


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
           "device": device_name(device)}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")


def write_report(results: list[AttentionBenchResult], out_dir: Path, *, tag: str, command: str, settings: dict,
                 device: torch.device, plot: bool = True) -> Path:
    return _write(results, out_dir, tag=tag, command=command, settings=settings, env=environment(device),
                  when=time.strftime("%Y-%m-%d %H:%M:%S"), plot=plot)


def rewrite_report(json_path: Path) -> Path:
    """Rewrite `<tag>.md` (tables, goals) and `<tag>.png` from a saved `<tag>.json`, e.g. of a run cut short
    (its partial JSON is saved after every length, without the plot)."""
    try:
        payload = json.loads(Path(json_path).read_text())
        names = {f.name for f in fields(AttentionBenchResult)}
        results = [AttentionBenchResult(**{k: v for k, v in r.items() if k in names}) for r in payload["results"]]
        command, settings, env, when = (payload[k] for k in ("command", "settings", "environment", "time"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{json_path}: cannot be read as a `mta-lab bench attention` JSON ({type(err).__name__}: "
                         f"{err}); give a <tag>.json that command wrote") from None
    return _write(results, Path(json_path).parent, tag=Path(json_path).stem, command=command, settings=settings,
                  env=env, when=when, plot=True)


def _write(results: list[AttentionBenchResult], out_dir: Path, *, tag: str, command: str, settings: dict, env: dict,
           when: str, plot: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    goal_list = goals(results, device_name=env["device"], dtype_name=settings["dtype"])
    ratio = ratios(results)
    records = []
    for r in results:
        record = asdict(r)
        record["x_sdpa_total"], record["x_sdpa_mem"] = ratio[(r.config, r.seq_len, r.backend)]
        records.append(record)
    payload = {"command": command, "settings": settings, "environment": env, "time": when, "results": records,
               "goals": goal_list}
    (out_dir / f"{tag}.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# Attention op benchmark: {tag}", "", f"Command: `{command}`", "", f"Environment: {env}", "",
             "Times are medians over the timed iterations; ratios are to SDPA of the same config and T in this run; "
             "peak GiB is above the inputs; rel err is max|out - eager| / max|eager| (grad: worst over the "
             "gradients of q, k, v and the op's weights).", "", markdown_tables(results), "## Goals", ""]
    lines += [f"- {g['text']}" for g in goal_list] + [""]
    if plot and _plot(results, out_dir / f"{tag}.png"):
        lines += [f"![time vs T]({tag}.png)", ""]
    path = out_dir / f"{tag}.md"
    path.write_text("\n".join(lines))
    return path


def _plot(results: list[AttentionBenchResult], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(dict.fromkeys(r.config for r in results))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for backend in dict.fromkeys(r.backend for r in results if r.config == name):
            points = [(r.seq_len, r.total_ms) for r in results
                      if r.config == name and r.backend == backend and r.total_ms is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=backend)
        ax.set(xscale="log", yscale="log", xlabel="T", ylabel="fwd+bwd ms", title=name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"device={name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device={name!r}: CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device={name!r}: expected auto, cpu or cuda[:N]")
    return device
