"""Triton kernels for the key-query convolution of materialised (B, H, T, T) maps, causal in and out.

The reference (`functional.causal_kq_conv`) runs `F.conv2d` (cuDNN's depthwise kernels) on the zero-masked T × T
maps; on an H200 the paper config's backward is 85% of its time (193 of 227 ms at T 4096), which pointed at
cuDNN's convolution gradients. Here the same function

    y[i, j] = Σ_{a, b} θ[h, a, b] · x̄[i - (c_q - 1) + a, j - o + b]   for j <= i, 0 above the diagonal,
    x̄ = x with its strict upper triangle zeroed (zero padded outside [0, T)),

is three kernels: the forward and the input gradient are one tap-unrolled correlation (the gradient uses the
flipped kernel), and the kernel gradient reduces G ⊙ shifted x̄ per tile into a partial-sum buffer (summed by
torch, deterministic). Tiles entirely above the diagonal are skipped. Maps stay in their dtype (float32 in the
op), accumulation is float32.

Backend "triton_conv" (opt-in). Exact: checked against the reference in Triton's interpreter (fp32, every
gradient, tests/unit/test_triton_conv.py) and on an H200 in `mta-lab bench attention` (bf16 grads 1.5e-3).
Not fast: on an H200 (reports/bench/attention-h200-*-triton-conv.md) the op is slower than eager, paper config
T 4096 252 vs 227 ms fwd+bwd, kq_pre 130 vs 115 ms. Its forward is ~4x slower than cuDNN's conv2d (66 masked,
unaligned tile loads per output tile), while the backward is faster than cuDNN's (135 vs 193 ms, paper config).
`reports/bench/conv_parts.py` times the pieces separately: the next step is cuDNN for the forward and the input
gradient with the Triton kernel gradient, if that is where cuDNN loses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mta_lab.attention.backends import register_backend
from mta_lab.attention.functional import materialised_attention
from mta_lab.attention.stacked import key_offset

BLOCK = 64  # output tile: BLOCK × BLOCK positions of one map


@triton.jit
def _shifted_tile(X, base, offs_i, offs_j, row_shift, col_shift, T):
    """X̄[i + row_shift, j + col_shift] over the tile, float32: zero outside [0, T) and above X's diagonal."""
    rows = offs_i + row_shift
    cols = offs_j + col_shift
    ok = ((rows >= 0) & (rows < T))[:, None] & (cols[None, :] >= 0) & (cols[None, :] <= rows[:, None])
    return tl.load(X + base + rows[:, None] * T + cols[None, :], mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _correlate(X, W, Y, T, row_off, col_off, C_Q: tl.constexpr, C_K: tl.constexpr, N_HEADS: tl.constexpr,
               BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    """Y[i, j] = Σ_{a,b} W[h, a, b] · X̄[i + a - row_off, j + b - col_off] on the lower triangle (j <= i), else 0;
    X̄ is X with its strict upper triangle zeroed."""
    pid_i, pid_j, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    h = bh % N_HEADS
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    base = bh.to(tl.int64) * T * T
    out_ok = (offs_i[:, None] < T) & (offs_j[None, :] < T)
    acc = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float32)
    if pid_j * BLOCK_J <= pid_i * BLOCK_I + BLOCK_I - 1:  # the tile reaches the lower triangle
        for a in tl.static_range(C_Q):
            for b in tl.static_range(C_K):
                x = _shifted_tile(X, base, offs_i, offs_j, a - row_off, b - col_off, T)
                acc += tl.load(W + (h * C_Q + a) * C_K + b) * x
    acc = tl.where(offs_j[None, :] <= offs_i[:, None], acc, 0.0)
    tl.store(Y + base + offs_i[:, None] * T + offs_j[None, :], acc.to(Y.dtype.element_ty), mask=out_ok)


@triton.jit
def _kernel_grad(G, X, P, T, row_off, col_off, n_tiles_j, C_Q: tl.constexpr, C_K: tl.constexpr,
                 BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, TAPS: tl.constexpr):
    """P[bh, tile, a·C_K + b] = Σ_tile G[i, j] · X̄[i + a - row_off, j + b - col_off] over its lower-triangle
    outputs (j <= i)."""
    pid_i, pid_j, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    base = bh.to(tl.int64) * T * T
    taps = tl.arange(0, TAPS)
    sums = tl.zeros([TAPS], dtype=tl.float32)
    if pid_j * BLOCK_J <= pid_i * BLOCK_I + BLOCK_I - 1:
        g_ok = (offs_i[:, None] < T) & (offs_j[None, :] <= offs_i[:, None])
        g = tl.load(G + base + offs_i[:, None] * T + offs_j[None, :], mask=g_ok, other=0.0).to(tl.float32)
        for a in tl.static_range(C_Q):
            for b in tl.static_range(C_K):
                x = _shifted_tile(X, base, offs_i, offs_j, a - row_off, b - col_off, T)
                sums += tl.where(taps == a * C_K + b, tl.sum(g * x), 0.0)
    tile = pid_i * n_tiles_j + pid_j
    tl.store(P + (bh.to(tl.int64) * tl.num_programs(0) * n_tiles_j + tile) * TAPS + taps, sums)


def _grid(x: torch.Tensor):
    b, h, t, _ = x.shape
    return (triton.cdiv(t, BLOCK), triton.cdiv(t, BLOCK), b * h)


def _correlate_call(x: torch.Tensor, weight: torch.Tensor, row_off: int, col_off: int) -> torch.Tensor:
    y = torch.empty_like(x)
    _, h, t, _ = x.shape
    _correlate[_grid(x)](x, weight, y, t, row_off, col_off, C_Q=weight.shape[1], C_K=weight.shape[2], N_HEADS=h,
                         BLOCK_I=BLOCK, BLOCK_J=BLOCK)
    return y


def _kernel_grad_call(grad: torch.Tensor, x: torch.Tensor, c_q: int, c_k: int, key_offset: int) -> torch.Tensor:
    """dθ (H, c_q, c_k), float32: per-tile partial sums of the kernel, summed over tiles and batch by torch."""
    gi, gj, bh = _grid(x)
    h = x.shape[1]
    taps = triton.next_power_of_2(c_q * c_k)
    partial = torch.empty(bh, gi * gj, taps, device=x.device, dtype=torch.float32)
    _kernel_grad[(gi, gj, bh)](grad, x, partial, x.shape[-1], c_q - 1, key_offset, gj, C_Q=c_q, C_K=c_k,
                               BLOCK_I=BLOCK, BLOCK_J=BLOCK, TAPS=taps)
    return partial.view(-1, h, gi * gj, taps).sum(dim=(0, 2))[:, :c_q * c_k].reshape(h, c_q, c_k)


class CausalKQConv(torch.autograd.Function):
    """(x (B, H, T, T), kernel (H, c_q, c_k), key offset o) -> the causal key-query convolution above."""

    @staticmethod
    def forward(ctx, x, kernel, key_offset: int):
        x = x.contiguous()
        weight = kernel.detach().float().contiguous()
        ctx.save_for_backward(x, weight)
        ctx.key_offset = key_offset
        return _correlate_call(x, weight, weight.shape[1] - 1, key_offset)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        _, c_q, c_k = weight.shape
        o = ctx.key_offset
        grad = grad.contiguous()
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:
            # dx[i', j'] = Σ θ[a, b] G[i' + (c_q-1) - a, j' + o - b]: the flipped kernel, offsets (0, c_k-1-o);
            # G is read on its lower triangle and dx kept on x's (the masks of the definition).
            grad_x = _correlate_call(grad, weight.flip(1, 2).contiguous(), 0, c_k - 1 - o)
        if ctx.needs_input_grad[1]:
            grad_kernel = _kernel_grad_call(grad, x, c_q, c_k, o)
        return grad_x, grad_kernel, None


@torch.compiler.disable  # a graph break under torch.compile: the kernels launch as they are
def causal_kq_conv_triton(x: torch.Tensor, kernel: torch.Tensor, pad_key: str = "both") -> torch.Tensor:
    """`functional.causal_kq_conv` (same arguments and result) through the kernels above; CUDA tensors."""
    n_heads, _, c_k = kernel.shape
    if x.shape[1] != n_heads:
        raise ValueError(f"kernel has {n_heads} heads but the maps have {x.shape[1]}")
    if pad_key == "both" and c_k % 2 == 0:
        raise ValueError(f"pad_key='both' needs an odd c_k, got c_k={c_k}")
    return CausalKQConv.apply(x, kernel, key_offset(c_k, pad_key))


def has_kq_conv(options: dict) -> bool:
    """The call has a key-query convolution (pre- or post-softmax): the only part these kernels speed up."""
    return options.get("kq_pre") is not None or options.get("kq_post") is not None


def triton_conv_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both",
                   dropout_p=0.0):
    """The reference op (materialised maps, every option, dropout) with `causal_kq_conv_triton` as its conv."""
    return materialised_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                                  pad_key=pad_key, dropout_p=dropout_p, conv=causal_kq_conv_triton)


register_backend(
    "triton_conv",
    triton_conv_op,
    priority=-1,  # opt-in: measured slower than eager on an H200 (see the module docstring)
    supports=lambda device: device.type == "cuda",
    accepts=has_kq_conv,
    description="every option: the reference op with its key-query convolutions as Triton kernels; opt-in "
                "(slower than eager on an H200: the forward kernel is the slow part)",
)
