"""Where the key-query convolution's time goes on a GPU: cuDNN's depthwise conv2d (forward, input gradient,
kernel gradient) against the Triton kernels of attention/backends/triton_conv.py, piece by piece, on one causal map
stack.

    mta-lab bench conv-parts [--batch 1] [--heads 16] [--seq-lens 2048,4096] [--kernel 6x11]

Prints milliseconds per piece (triton.testing.do_bench, float32 maps as in the op) and checks each Triton piece
against cuDNN's. reports/bench/conv-parts-h200*.log hold the runs (the first with the earlier, tap-unrolled
Triton forward).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton.testing

from mta_lab.attention.backends.triton_conv import correlate_maps, kernel_grad_maps
from mta_lab.attention.reference import causal_mask
from mta_lab.attention.spec import key_center


def measure(batch: int, h: int, t: int, c_q: int, c_k: int) -> None:
    o = key_center(c_k, "both")
    visible = causal_mask(t, t, torch.device("cuda"))
    x = torch.randn(batch, h, t, t, device="cuda").masked_fill(~visible, 0.0)
    grad = torch.randn_like(x).masked_fill(~visible, 0.0)
    kernel = torch.randn(h, c_q, c_k, device="cuda")
    flipped = kernel.flip(1, 2).contiguous()
    weight = kernel.unsqueeze(1)
    padded = F.pad(x, (o, c_k - 1 - o, c_q - 1, 0))
    pieces = {
        "cudnn forward": lambda: F.conv2d(padded, weight, groups=h),
        "cudnn input grad": lambda: torch.nn.grad.conv2d_input(padded.shape, weight, grad, groups=h),
        "cudnn kernel grad": lambda: torch.nn.grad.conv2d_weight(padded, weight.shape, grad, groups=h),
        "triton forward": lambda: correlate_maps(x, kernel, c_q - 1, o),
        "triton input grad": lambda: correlate_maps(grad, flipped, 0, c_k - 1 - o),
        "triton kernel grad": lambda: kernel_grad_maps(grad, x, c_q, c_k, o),
    }
    ms = {name: triton.testing.do_bench(f) for name, f in pieces.items()}
    errors = {
        "forward": rel(correlate_maps(x, kernel, c_q - 1, o),
                       F.conv2d(padded, weight, groups=h).masked_fill(~visible, 0.0)),
        "input grad": rel(correlate_maps(grad, flipped, 0, c_k - 1 - o),
                          torch.nn.grad.conv2d_input(padded.shape, weight, grad, groups=h)
                          [:, :, c_q - 1:, o:o + t].masked_fill(~visible, 0.0)),
        "kernel grad": rel(kernel_grad_maps(grad, x, c_q, c_k, o),
                           torch.nn.grad.conv2d_weight(padded, weight.shape, grad, groups=h).squeeze(1)),
    }
    print(f"== B {batch} H {h} T {t} kernel {c_q}x{c_k}: Triton vs cuDNN rel err: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()), flush=True)
    for name, value in ms.items():
        print(f"{name:20s} {value:9.3f} ms", flush=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def run(opts: argparse.Namespace) -> int:
    """The tool with the options `mta-lab bench` parsed (commands/bench.py defines them)."""
    c_q, c_k = map(int, opts.kernel.split("x"))
    for t in map(int, opts.seq_lens.split(",")):
        measure(opts.batch, opts.heads, t, c_q, c_k)
    return 0
