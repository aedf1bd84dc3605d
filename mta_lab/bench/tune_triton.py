"""Tile search for the `triton` backend's kernels (attention/backends/triton.py) on one GPU, with a correctness
check.

    mta-lab bench tune-triton [--seq-lens 1024,4096] [--out reports/bench/triton-tune-h200.json]

For each shape (the kq_pre bench's B 1, H 16, d 96, c_q 6 → width 576, W 10; and the toy task's H 2, d 128, c_q 2,
W 12), times forward and forward+backward of `TritonBandAttention` for every tile candidate against SDPA at
head width d, and checks output and gradients against the materialised `dense_core` (bf16 inputs, float32
reference). A candidate that fails to compile or run is recorded with its error. Prints the best per shape.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

import torch
import torch.nn.functional as F
import triton.testing

from mta_lab.attention.backends.triton import triton_core
from mta_lab.attention.decomposition import dense_core

SHAPES = {  # name: (heads, head_dim d, c_q, W)
    "kq_pre 6x11": (16, 96, 6, 10),
    "toy 2x15": (2, 128, 2, 8),
}
# The first search (reports/bench/triton-tune-h200.log) tried BLOCK_M 32-128, BLOCK_N 16-64, BLOCK_K 32-64 and
# found its best at the edge (backward 128 x 64 x 64): this grid goes past it (a tile that does not fit fails
# to compile and is recorded as an error).
FWD = [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s)
       for m, n, k, w, s in itertools.product((64, 128), (64, 128), (64, 128), (4, 8), (2, 3)) if n <= m]
BWD = [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=w, num_stages=s)
       for m, n, k, w, s in itertools.product((64, 128, 256), (32, 64, 128), (64, 128), (4, 8), (1,)) if n <= m]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


def inputs(heads: int, d: int, c_q: int, w: int, t: int):
    g = torch.Generator(device="cuda").manual_seed(t)
    q_hat = torch.randn(1, heads, t, c_q * d, device="cuda", generator=g).div(math.sqrt(c_q)).bfloat16()
    k_hat = torch.randn(1, heads, t, c_q * d, device="cuda", generator=g).bfloat16()
    v = torch.randn(1, heads, t, d, device="cuda", generator=g).bfloat16()
    corr = torch.randn(1, heads, t, w, device="cuda", generator=g)
    return [x.requires_grad_() for x in (q_hat, k_hat, v, corr)]


def sdpa_times(q, k, v, grad) -> tuple[float, float]:
    """Forward and forward+backward ms of causal SDPA at head width d (the reference of the ratios)."""
    fwd = triton.testing.do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    total = triton.testing.do_bench(lambda: torch.autograd.grad(
        F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v), grad))
    return fwd, total


def run_candidate(blocks: dict, backward: bool, args, grad, ref):
    """Time and check one tile choice, through the backend's own MTA_TRITON_BLOCKS override of one kernel."""
    previous = os.environ.get("MTA_TRITON_BLOCKS")
    os.environ["MTA_TRITON_BLOCKS"] = json.dumps({"bwd" if backward else "fwd": blocks})
    try:
        scale = 1.0 / math.sqrt(args[2].shape[-1])
        out = triton_core(*args, scale)
        grads = torch.autograd.grad(out, args, grad)
        errs = {name: rel(a, e) for name, a, e in zip(("out", "q", "k", "v", "corr"), (out, *grads), ref, strict=True)}
        fwd = triton.testing.do_bench(lambda: triton_core(*args, scale), warmup=5, rep=40)
        total = triton.testing.do_bench(
            lambda: torch.autograd.grad(triton_core(*args, scale), args, grad), warmup=5, rep=40)
        return {"fwd_ms": fwd, "total_ms": total, "errors": errs}
    except Exception as err:  # noqa: BLE001 - record and go on
        return {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    finally:
        if previous is None:
            os.environ.pop("MTA_TRITON_BLOCKS", None)
        else:
            os.environ["MTA_TRITON_BLOCKS"] = previous


def run(opts: argparse.Namespace) -> int:
    """The tool with the options `mta-lab bench` parsed (commands/bench.py defines them)."""
    shapes = opts.shapes.split(",") if opts.shapes else list(SHAPES)
    results = []
    for shape in shapes:
        heads, d, c_q, w = SHAPES[shape]
        for t in map(int, opts.seq_lens.split(",")):
            args = inputs(heads, d, c_q, w, t)
            grad = torch.randn(1, heads, t, d, device="cuda").bfloat16()
            f32 = [x.detach().float().requires_grad_() for x in args]
            ref_out = dense_core(*f32, 1.0 / math.sqrt(d))
            ref = (ref_out, *torch.autograd.grad(ref_out, f32, grad.float()))
            del ref_out
            qs, ks, vs = (torch.randn(1, heads, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                          for _ in range(3))
            sdpa_fwd, sdpa_total = sdpa_times(qs, ks, vs, grad)
            print(f"== {shape} T={t}: SDPA fwd {sdpa_fwd:.3f} ms, fwd+bwd {sdpa_total:.3f} ms", flush=True)
            shape_start = time.time()
            for phase, candidates in (("fwd", FWD), ("bwd", BWD)):
                for blocks in candidates:
                    if time.time() - shape_start > opts.budget_s:
                        print(f"budget of {opts.budget_s:.0f}s spent: {phase} {blocks} not tried", flush=True)
                        continue
                    start = time.time()
                    r = run_candidate(blocks, phase == "bwd", args, grad, ref)
                    row = {"shape": shape, "T": t, "phase": phase, "blocks": blocks, "sdpa_fwd_ms": sdpa_fwd,
                           "sdpa_total_ms": sdpa_total, **r}
                    results.append(row)
                    summary = r.get("error") or (f"fwd {r['fwd_ms']:.3f} total {r['total_ms']:.3f} ms "
                                                 f"(x{r['total_ms'] / sdpa_total:.1f} SDPA) max err "
                                                 f"{max(r['errors'].values()):.1e}")
                    print(f"{phase} {blocks}: {summary} [{time.time() - start:.1f}s]", flush=True)
            with open(opts.out, "w") as fh:
                json.dump(results, fh, indent=1)
    best_env: dict = {}  # MTA_TRITON_BLOCKS for the first shape at its longest T
    for shape in shapes:
        for phase in ("fwd", "bwd"):
            ok = [r for r in results if r["shape"] == shape and r["phase"] == phase and "error" not in r
                  and max(r["errors"].values()) < 2e-2]
            key = "fwd_ms" if phase == "fwd" else "total_ms"
            for t in sorted({r["T"] for r in ok}):
                best = min((r for r in ok if r["T"] == t), key=lambda r: r[key])
                print(f"BEST {shape} T={t} {phase}: {best['blocks']} {key}={best[key]:.3f}", flush=True)
                if shape == shapes[0]:
                    best_env[phase] = best["blocks"]
    if opts.best_out:
        with open(opts.best_out, "w") as fh:
            json.dump(best_env, fh)
    return 0
