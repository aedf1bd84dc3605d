"""Device call 1 of 2026-12-03 (issue 16): does running the materialised float32 matrix products on TF32 tensor cores
move the paper layers? One H200, from the repository root:  python3 reports/device/2026-12-03-tf32.py OUT_DIR

Part A, the op alone (B 1, H 16, d 96, T 4096, bf16 inputs; fwd + bwd medians of 10 after 3 warmup): SDPA and each
config's `auto` backend with torch.backends.cuda.matmul.allow_tf32 off and on, the output and gradient error to the
float32 eager reference (TF32 off), and a torch.profiler table of the paper layer's kernels under each setting.
Part B, the model (880M, B 2, T 2048, compiled blocks, 10 steps after 3): transformer, mta, talking_heads and
t5_kq_6x11 with TF32 off and on (`bench_one` of `mta-lab bench train`)."""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mta_lab.attention.backends import backends, resolve
from mta_lab.bench.attention_bench import CONFIGS, make_inputs, op_options
from mta_lab.bench.train_bench import bench_one, peak_flops_for

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
dev = torch.device("cuda")
log = open(out / "tf32.log", "w")


def say(*a):
    text = " ".join(str(x) for x in a)
    print(text, flush=True)
    log.write(text + "\n")
    log.flush()


def timed(fn, args, grad_out, iters=10, warmup=3):
    times = []
    for i in range(warmup + iters):
        start, mid, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        start.record()
        o = fn(*args)
        mid.record()
        torch.autograd.grad(o, [a for a in args if a.requires_grad], grad_out)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append((start.elapsed_time(mid), mid.elapsed_time(end)))
    times.sort(key=lambda t: t[0] + t[1])
    return times[len(times) // 2]


def rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


registry = {b.name: b for b in backends()}
rows = []
for name in ("kq_pre", "talking_heads", "paper"):
    qkv, weights = make_inputs(CONFIGS[name], batch=1, heads=16, head_dim=96, seq_len=4096, dtype=torch.bfloat16,
                               device=dev)
    names = [k for k, w in weights.items() if w is not None]
    leaves = [t.requires_grad_() for t in qkv] + [weights[k].requires_grad_() for k in names]
    opts = op_options(weights)
    chosen = resolve("auto", dev, {**opts, "score_elements": 16 * 4096 * 4096}).name
    fn_b = registry[chosen].fn

    def op(q, k, v, *ws, fn=fn_b):
        return fn(q, k, v, **dict(opts, **dict(zip(names, ws))))  # noqa: B023, B905 (used within this iteration)

    grad_out = torch.randn_like(qkv[0])
    torch.backends.cuda.matmul.allow_tf32 = False
    ref_fn = registry["eager"].fn
    ref = ref_fn(*qkv, **dict(opts, **dict(zip(names, leaves[3:], strict=True))))
    ref_grads = torch.autograd.grad(ref, leaves, grad_out)
    del ref_fn
    sd = timed(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), qkv, grad_out)
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        o = op(*leaves)
        grads = torch.autograd.grad(o, leaves, grad_out)
        err, gerr = rel(o, ref), max(rel(g, r) for g, r in zip(grads, ref_grads, strict=True))
        del o, grads
        torch.cuda.reset_peak_memory_stats()
        f, b = timed(op, leaves, grad_out)
        peak = torch.cuda.max_memory_allocated() / 2**30
        row = dict(config=name, backend=chosen, tf32=tf32, fwd_ms=f, bwd_ms=b, total_ms=f + b,
                   x_sdpa=(f + b) / sum(sd), sdpa_ms=sum(sd), rel_err=err, grad_rel_err=gerr, peak_gib=peak)
        rows.append(row)
        say(json.dumps(row))
        if name == "paper":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                o = op(*leaves)
                torch.autograd.grad(o, leaves, grad_out)
                torch.cuda.synchronize()
            say(f"== paper layer kernels, tf32={tf32}")
            say(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    del ref, ref_grads, leaves, qkv
    torch.cuda.empty_cache()
torch.backends.cuda.matmul.allow_tf32 = False
(out / "tf32-op.json").write_text(json.dumps(rows, indent=2))

results = []
peak = peak_flops_for(dev, None)
for attention in ("transformer", "mta", "talking_heads", "t5_kq_6x11"):
    for tf32 in (False, True):
        if attention in ("transformer", "talking_heads") and not tf32:
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        t0 = time.time()
        r = bench_one("880m", attention, batch_size=2, seq_len=2048, steps=10, warmup=3, compile_model=True,
                      device=dev, peak_flops=peak)
        d = dict(r.__dict__, tf32=tf32, wall_s=time.time() - t0)
        results.append(d)
        say(json.dumps(d))
        (out / "tf32-train.json").write_text(json.dumps(results, indent=2))
