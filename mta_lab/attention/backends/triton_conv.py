"""The key-query convolution of materialised (B, H, T, T) maps on tensor cores: backend "triton_conv" (the paper
config's layers with a post-softmax conv, on CUDA).

The function is the reference's (`reference.causal_kq_conv`):

    y[i, j] = Σ_{a, b} θ[h, a, b] · x̄[i - (c_q - 1) + a, j - o + b]   for j <= i, 0 above the diagonal,
    x̄ = x with its strict upper triangle zeroed (zero padded outside [0, T)).

Along the key axis a row convolution is a product with a banded Toeplitz matrix, B_a[m, n] = θ[h, a, m - n]
(0 <= m - n < c_k). So an output tile (BLOCK_I query rows, BLOCK_J keys) is Σ_a X_a B_a, X_a the
(BLOCK_I, WIDTH) window of x̄ rows shifted by a, WIDTH >= BLOCK_J + c_k - 1 columns: c_q tensor-core products,
float32 maps in 3×TF32. The input gradient is the same correlation with the flipped kernel; the kernel gradient
takes R_a = Gᵀ X_a per tile and sums its diagonals m - n = b (per-tile partial sums, added by torch:
deterministic). Tiles entirely above the diagonal are skipped.

On an H200 (reports/bench/conv-parts-h200*.log; float32 maps, B 1, H 16, 6x11, T 4096) against cuDNN's depthwise
conv2d: forward 3.6 vs 9.4 ms, input gradient 3.6 vs 13.0 ms, kernel gradient 6.3 vs 76 ms (an earlier,
tap-unrolled Triton version took 60 ms for the forward). Relative error to cuDNN ~5e-7 (forward, input gradient)
and ~1e-5 (kernel gradient).

The backend runs the reference's materialised steps with this convolution after the softmax and the "stacked"
matrix product for steps 1-2 (`decomposition.kq_pre_scores`). Exact: checked against the reference in Triton's
interpreter (fp32, every gradient, tests/attention/backends/test_triton_conv.py) and on an H200 (the GPU tests
beside it).
"""

from __future__ import annotations

import json
import os

import torch
import triton
import triton.language as tl

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.decomposition import kq_pre_scores
from mta_lab.attention.reference import materialised_attention
from mta_lab.attention.spec import key_center


@triton.jit
def _shifted_tile(X, base, offs_i, offs_j, row_shift, col_shift, T):
    """X̄[i + row_shift, j + col_shift] over the tile, float32: zero outside [0, T) and above X's diagonal."""
    rows = offs_i + row_shift
    cols = offs_j + col_shift
    ok = ((rows >= 0) & (rows < T))[:, None] & (cols[None, :] >= 0) & (cols[None, :] <= rows[:, None])
    return tl.load(X + base + rows[:, None] * T + cols[None, :], mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _correlate(X, W, Y, T, row_off, col_off, C_Q: tl.constexpr, C_K: tl.constexpr, N_HEADS: tl.constexpr,
               BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, WIDTH: tl.constexpr, PRECISION: tl.constexpr):
    """Y[i, j] = Σ_{a,b} W[h, a, b] · X̄[i + a - row_off, j + b - col_off] on the lower triangle (j <= i), else 0;
    X̄ is X with its strict upper triangle zeroed.

    On tensor cores: for each kernel row a, the (BLOCK_I, WIDTH) window of X̄ rows i + a - row_off starting at
    column j0 - col_off, times the banded Toeplitz matrix B_a[m, n] = W[h, a, m - n] (0 <= m - n < C_K), is the
    key-axis convolution of those rows for the BLOCK_J output columns; WIDTH >= BLOCK_J + C_K - 1."""
    pid_i, pid_j, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    h = bh % N_HEADS
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_m = tl.arange(0, WIDTH)
    base = bh.to(tl.int64) * T * T
    acc = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float32)
    if pid_j * BLOCK_J <= pid_i * BLOCK_I + BLOCK_I - 1:  # the tile reaches the lower triangle
        cols = pid_j * BLOCK_J - col_off + offs_m
        tap = offs_m[:, None] - tl.arange(0, BLOCK_J)[None, :]  # m - n
        in_band = (tap >= 0) & (tap < C_K)
        for a in tl.static_range(C_Q):
            x = _shifted_tile(X, base, offs_i, cols, a - row_off, 0, T)
            band = tl.load(W + (h * C_Q + a) * C_K + tap, mask=in_band, other=0.0).to(x.dtype)
            acc += tl.dot(x, band, input_precision=PRECISION)
    acc = tl.where(offs_j[None, :] <= offs_i[:, None], acc, 0.0)
    out_ok = (offs_i[:, None] < T) & (offs_j[None, :] < T)
    tl.store(Y + base + offs_i[:, None] * T + offs_j[None, :], acc.to(Y.dtype.element_ty), mask=out_ok)


@triton.jit
def _kernel_grad(G, X, P, T, row_off, col_off, n_tiles_j, C_Q: tl.constexpr, C_K: tl.constexpr,
                 BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, WIDTH: tl.constexpr, TAPS: tl.constexpr,
                 PRECISION: tl.constexpr):
    """P[bh, tile, a·C_K + b] = Σ_tile G[i, j] · X̄[i + a - row_off, j + b - col_off] over its lower-triangle
    outputs (j <= i).

    On tensor cores, with `_correlate`'s row windows X_a (BLOCK_I, WIDTH) starting at column j0 - col_off:
    R_a = Gᵀ X_a (BLOCK_J, WIDTH) and the tap b is the sum of R_a's diagonal m - n = b."""
    pid_i, pid_j, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_m = tl.arange(0, WIDTH)
    base = bh.to(tl.int64) * T * T
    taps = tl.arange(0, TAPS)
    sums = tl.zeros([TAPS], dtype=tl.float32)
    if pid_j * BLOCK_J <= pid_i * BLOCK_I + BLOCK_I - 1:
        g_ok = (offs_i[:, None] < T) & (offs_j[None, :] <= offs_i[:, None])
        g = tl.load(G + base + offs_i[:, None] * T + offs_j[None, :], mask=g_ok, other=0.0)
        cols = pid_j * BLOCK_J - col_off + offs_m
        tap = offs_m[None, :] - tl.arange(0, BLOCK_J)[:, None]  # m - n
        for a in tl.static_range(C_Q):
            x = _shifted_tile(X, base, offs_i, cols, a - row_off, 0, T).to(g.dtype)
            r = tl.dot(tl.trans(g), x, input_precision=PRECISION)
            for b in tl.static_range(C_K):
                sums += tl.where(taps == a * C_K + b, tl.sum(tl.where(tap == b, r, 0.0)), 0.0)
    tile = pid_i * n_tiles_j + pid_j
    tl.store(P + (bh.to(tl.int64) * tl.num_programs(0) * n_tiles_j + tile) * TAPS + taps, sums)


def _correlate_blocks(x: torch.Tensor, c_k: int) -> dict:
    """Tiles of `_correlate` and `_kernel_grad`; MTA_TRITON_CONV_BLOCKS (JSON, e.g. '{"BLOCK_I": 128, "BLOCK_J":
    32}') overrides them. Float32 maps multiply in 3×TF32 (float32-accurate to ~1e-6), 16-bit ones as they are."""
    blocks = {"BLOCK_I": 64, "BLOCK_J": 32, "num_warps": 4}
    if "MTA_TRITON_CONV_BLOCKS" in os.environ:
        blocks |= json.loads(os.environ["MTA_TRITON_CONV_BLOCKS"])
    width = max(16, triton.next_power_of_2(blocks["BLOCK_J"] + c_k - 1))
    return {**blocks, "WIDTH": width, "PRECISION": "tf32x3" if x.dtype == torch.float32 else "ieee"}


def correlate_maps(x: torch.Tensor, weight: torch.Tensor, row_off: int, col_off: int) -> torch.Tensor:
    """Y[i, j] = Σ_{a,b} W[h, a, b] · X̄[i + a - row_off, j + b - col_off] on the lower triangle (the `_correlate`
    kernel) over (B, H, T, T) maps x with a (H, c_q, c_k) float32 weight: the convolution's forward with
    (row_off, col_off) = (c_q - 1, o), its input gradient with the flipped weight and (0, c_k - 1 - o)."""
    y = torch.empty_like(x)
    b, h, t, _ = x.shape
    blocks = _correlate_blocks(x, weight.shape[2])
    grid = (triton.cdiv(t, blocks["BLOCK_I"]), triton.cdiv(t, blocks["BLOCK_J"]), b * h)
    _correlate[grid](x, weight, y, t, row_off, col_off, C_Q=weight.shape[1], C_K=weight.shape[2], N_HEADS=h,
                     **blocks)
    return y


def kernel_grad_maps(grad: torch.Tensor, x: torch.Tensor, c_q: int, c_k: int, key_offset: int) -> torch.Tensor:
    """dθ (H, c_q, c_k), float32: per-tile partial sums of the kernel, summed over tiles and batch by torch."""
    b, h, t, _ = x.shape
    blocks = _correlate_blocks(x, c_k)
    gi, gj = triton.cdiv(t, blocks["BLOCK_I"]), triton.cdiv(t, blocks["BLOCK_J"])
    taps = triton.next_power_of_2(c_q * c_k)
    partial = torch.empty(b * h, gi * gj, taps, device=x.device, dtype=torch.float32)
    _kernel_grad[(gi, gj, b * h)](grad, x, partial, t, c_q - 1, key_offset, gj, C_Q=c_q, C_K=c_k, TAPS=taps,
                                  **blocks)
    return partial.view(b, h, gi * gj, taps).sum(dim=(0, 2))[:, :c_q * c_k].reshape(h, c_q, c_k)


class CausalKQConv(torch.autograd.Function):
    """(x (B, H, T, T), kernel (H, c_q, c_k), pad_key) -> the causal key-query convolution above."""

    @staticmethod
    def forward(ctx, x, kernel, pad_key: str):
        x = x.contiguous()
        weight = kernel.detach().to(x.dtype).contiguous()
        ctx.save_for_backward(x, weight)
        ctx.pad_key = pad_key
        return correlate_maps(x, weight, weight.shape[1] - 1, key_center(weight.shape[2], pad_key))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        _, c_q, c_k = weight.shape
        o = key_center(c_k, ctx.pad_key)
        grad = grad.to(x.dtype).contiguous()  # both kernels read it on its lower triangle only (the re-zeroing)
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:
            # dx[i', j'] = Σ θ[a, b] G[i' + (c_q-1) - a, j' + o - b]: the flipped kernel, offsets (0, c_k-1-o);
            # G is read on its lower triangle and dx kept on x's (the masks of the definition).
            grad_x = correlate_maps(grad, weight.float().flip(1, 2).contiguous(), 0, c_k - 1 - o)
        if ctx.needs_input_grad[1]:
            grad_kernel = kernel_grad_maps(grad, x, c_q, c_k, o)
        return grad_x, grad_kernel, None


@torch.compiler.disable  # a graph break under torch.compile: the kernels launch as they are
def causal_kq_conv_triton(x: torch.Tensor, kernel: torch.Tensor, pad_key: str = "both") -> torch.Tensor:
    """`reference.causal_kq_conv` (same arguments and result) with the Triton kernel gradient; CUDA tensors."""
    n_heads, _, c_k = kernel.shape
    if x.shape[1] != n_heads:
        raise ValueError(f"kernel has {n_heads} heads but the maps have {x.shape[1]}")
    if pad_key == "both" and c_k % 2 == 0:
        raise ValueError(f"pad_key='both' needs an odd c_k, got c_k={c_k}")
    return CausalKQConv.apply(x, kernel, pad_key)


def has_kq_post(options: dict) -> bool:
    """The call has a post-softmax key-query convolution: the materialised conv this module speeds up."""
    return options.get("kq_post") is not None


def triton_conv_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both",
                   dropout_p=0.0):
    """The reference op (materialised maps, every option, dropout) with the stacked S' for steps 1-2 and
    `causal_kq_conv_triton` as the post-softmax convolution."""
    return materialised_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                                  pad_key=pad_key, dropout_p=dropout_p, conv=causal_kq_conv_triton,
                                  pre_scores=kq_pre_scores if kq_pre is not None else None)


register(Backend(
    "triton_conv",
    triton_conv_op,
    devices=("cuda",),
    calls="calls with a post-softmax kq conv (with any other option, dropout included)",
    implements=has_kq_post,
    materialises=True,
    description="materialised maps, the stacked S' before the softmax, cuDNN conv forward/input grad and a Triton "
                "kernel grad after it",
))
