"""Head mixing (Talking heads; the paper config's layers without key-query convolutions) with Triton kernels around
cuBLAS products: backend "triton_mix".

The op: S = scale·q kᵀ; S'' = W₁ S over the head axis (step 3); P = causal softmax of S'' (step 4); P̂ = W₂ P over
the head axis (step 6, grouped mixing as a block-diagonal H×H matrix); O = P̂ v. W₁ and W₂ are [out, in] matrices.

Mixing couples the H heads at each (i, j), so every program of the kernels holds one query row of all heads
(H padded to HP >= 16, a tensor-core tile) and mixes a (HP, BLOCK_N) tile with one (HP × HP) matrix product:

- forward: the products S = q kᵀ (float32 out) and O = P̂ v run on cuBLAS; one kernel streams S twice per row
  (log-sum-exp of the mixed scores, then P̂) and writes P̂, zero above the diagonal, in v's dtype.
- backward: S and dP̂ = dO vᵀ are recomputed/formed by cuBLAS; one kernel streams them twice per row
  (Δ = Σⱼ P ⊙ dP with dP = W₂ᵀ dP̂, then dS'' = P ⊙ (dP − Δ), dS = W₁ᵀ dS''), writes dS and P̂, and sums
  dW₁ = dS'' Sᵀ and dW₂ = dP̂ Pᵀ per row (one partial per program, summed after); dq, dk, dv are cuBLAS products.

Only q, k, v and the row log-sum-exp are kept between forward and backward: the T × T maps exist during one
layer's forward or backward, never across the model, so a model's peak memory stays near the Transformer's.
They do exist, so the op's own peak grows as T² (the linear-memory backends for head mixing are "triton_flashmix"
and "chunked").
No dropout and no key-query convolutions: such calls go to other backends. Correct against the eager op in
Triton's interpreter (fp32, tests/attention/backends/test_triton_mix.py) and on an H200 (the GPU tests beside it).

On an H200 (reports/bench/attention-h200-talking_heads.md; bf16, B 1, H 16, d 96, T 4096) fwd+bwd takes 4.6 ms
against eager's 21.7 (SDPA 0.57): 8.2× SDPA. The 880M Talking heads model trains at 0.549× the Transformer's
tokens/s with its memory (eager: 0.50×, 2.04× memory). The backward's four passes over float32 maps (S and dP̂,
each read twice) are most of its 3.2 ms.
"""

from __future__ import annotations

import json
import math
import os

import torch
import triton
import triton.language as tl

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.backends.policy import mixing_only

NEG: tl.constexpr = tl.constexpr(-1.0e30)  # "minus infinity" that keeps exp() and max() finite for padded heads


@triton.jit
def _row_offset(b, offs_h, i, T, stride_b, stride_h):
    """Element offsets (HP, 1) of row i of every head of batch b in a (B, H, T, T) map, in 64 bits: H·T² passes
    2^31 at T = 16K."""
    return b.to(tl.int64) * stride_b + offs_h.to(tl.int64)[:, None] * stride_h + i.to(tl.int64) * T


@triton.jit
def _mixed_probs(s_row, w1, lse, offs_h, offs_n, i, H, scale,
                 HAS_PRE: tl.constexpr, PRECISION: tl.constexpr):
    """(S tile, P tile) of row i over keys offs_n: S = scale·(q kᵀ as stored), P = exp(W₁S − lse), zero where not
    visible."""
    visible = (offs_h < H)[:, None] & (offs_n <= i)[None, :]
    s = tl.load(s_row + offs_n[None, :], mask=visible, other=0.0) * scale
    mixed = s
    if HAS_PRE:
        mixed = tl.dot(w1, s, input_precision=PRECISION)
    return s, tl.where(visible, tl.exp(mixed - lse[:, None]), 0.0)


@triton.jit
def _mix_fwd(S, W1, W2, P, Lse, H, T, scale, stride_sb, stride_sh, stride_pb, stride_ph,
             HP: tl.constexpr, BLOCK_N: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
             PRECISION: tl.constexpr):
    i = T - 1 - tl.program_id(0)  # longest rows first
    b = tl.program_id(1)
    offs_h = tl.arange(0, HP)
    h_ok = offs_h < H
    s_row = S + _row_offset(b, offs_h, i, T, stride_sb, stride_sh)
    p_row = P + _row_offset(b, offs_h, i, T, stride_pb, stride_ph)
    square = offs_h[:, None] * HP + offs_h[None, :]
    w1 = tl.load(W1 + square)  # zeros when unused (HAS_PRE / HAS_POST false)
    # Pass 1: log-sum-exp of the mixed scores over keys j <= i.
    m = tl.full([HP], NEG, dtype=tl.float32)
    total = tl.zeros([HP], dtype=tl.float32)
    for start in range(0, i + 1, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        visible = h_ok[:, None] & (offs_n <= i)[None, :]
        s = tl.load(s_row + offs_n[None, :], mask=visible, other=0.0) * scale
        if HAS_PRE:
            s = tl.dot(w1, s, input_precision=PRECISION)
        s = tl.where(visible, s, NEG)
        m_new = tl.maximum(m, tl.max(s, 1))
        total = total * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
        m = m_new
    lse = tl.where(h_ok, m + tl.log(total), 0.0)  # padded heads: 0, so that exp(-lse) stays finite
    tl.store(Lse + (b * H + offs_h) * T + i, lse, mask=h_ok)
    # Pass 2: P̂ = W₂ P on the visible blocks, zeros after them.
    w2 = tl.load(W2 + square)
    for start in range(0, i + 1, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        _, p = _mixed_probs(s_row, w1, lse, offs_h, offs_n, i, H, scale, HAS_PRE, PRECISION)
        if HAS_POST:
            p = tl.dot(w2, p, input_precision=PRECISION)
        tl.store(p_row + offs_n[None, :], p.to(P.dtype.element_ty), mask=h_ok[:, None] & (offs_n < T)[None, :])
    for start in range((i // BLOCK_N + 1) * BLOCK_N, T, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        tl.store(p_row + offs_n[None, :], tl.zeros([HP, BLOCK_N], dtype=P.dtype.element_ty),
                 mask=h_ok[:, None] & (offs_n < T)[None, :])


@triton.jit
def _mix_bwd(S, dPh, Lse, W1, W2, dS, P, dW1, dW2, H, T, scale, stride_sb, stride_sh, stride_pb, stride_ph,
             HP: tl.constexpr, BLOCK_N: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
             PRECISION: tl.constexpr):
    i = T - 1 - tl.program_id(0)
    b = tl.program_id(1)
    offs_h = tl.arange(0, HP)
    h_ok = offs_h < H
    row = _row_offset(b, offs_h, i, T, stride_sb, stride_sh)  # S and dP̂ share a layout; dS and P̂ another
    s_row, dph_row = S + row, dPh + row
    out_row = _row_offset(b, offs_h, i, T, stride_pb, stride_ph)
    square = offs_h[:, None] * HP + offs_h[None, :]
    w1 = tl.load(W1 + square)  # zeros when unused (HAS_PRE / HAS_POST false)
    w2 = tl.load(W2 + square)
    w2t = tl.load(W2 + offs_h[None, :] * HP + offs_h[:, None])  # W₂ᵀ
    lse = tl.load(Lse + (b * H + offs_h) * T + i, mask=h_ok, other=0.0)
    # Pass 1: Δ[h] = Σ_j P[h, j] dP[h, j], dP = W₂ᵀ dP̂.
    delta = tl.zeros([HP], dtype=tl.float32)
    for start in range(0, i + 1, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        _, p = _mixed_probs(s_row, w1, lse, offs_h, offs_n, i, H, scale, HAS_PRE, PRECISION)
        dp = tl.load(dph_row + offs_n[None, :], mask=h_ok[:, None] & (offs_n <= i)[None, :], other=0.0)
        if HAS_POST:
            dp = tl.dot(w2t, dp, input_precision=PRECISION)
        delta += tl.sum(p * dp, 1)
    # Pass 2: dS = scale·W₁ᵀ (P ⊙ (dP − Δ)), P̂ for dv, and the mixing matrices' gradients.
    w1t = tl.load(W1 + offs_h[None, :] * HP + offs_h[:, None])  # W₁ᵀ
    dw1 = tl.zeros([HP, HP], dtype=tl.float32)
    dw2 = tl.zeros([HP, HP], dtype=tl.float32)
    for start in range(0, i + 1, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        keep = h_ok[:, None] & (offs_n < T)[None, :]
        s, p = _mixed_probs(s_row, w1, lse, offs_h, offs_n, i, H, scale, HAS_PRE, PRECISION)
        dph = tl.load(dph_row + offs_n[None, :], mask=h_ok[:, None] & (offs_n <= i)[None, :], other=0.0)
        if HAS_POST:
            dp = tl.dot(w2t, dph, input_precision=PRECISION)
            dw2 += tl.dot(dph, tl.trans(p), input_precision=PRECISION)
            p_hat = tl.dot(w2, p, input_precision=PRECISION)
            tl.store(P + out_row + offs_n[None, :], p_hat.to(P.dtype.element_ty), mask=keep)
        else:
            dp = dph
            tl.store(P + out_row + offs_n[None, :], p.to(P.dtype.element_ty), mask=keep)
        ds = p * (dp - delta[:, None])  # gradient of the mixed scores S''
        if HAS_PRE:
            dw1 += tl.dot(ds, tl.trans(s), input_precision=PRECISION)
            ds = tl.dot(w1t, ds, input_precision=PRECISION)
        tl.store(dS + out_row + offs_n[None, :], (ds * scale).to(dS.dtype.element_ty), mask=keep)  # d(q kᵀ)
    for start in range((i // BLOCK_N + 1) * BLOCK_N, T, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        keep = h_ok[:, None] & (offs_n < T)[None, :]
        tl.store(P + out_row + offs_n[None, :], tl.zeros([HP, BLOCK_N], dtype=P.dtype.element_ty), mask=keep)
        tl.store(dS + out_row + offs_n[None, :], tl.zeros([HP, BLOCK_N], dtype=dS.dtype.element_ty), mask=keep)
    partial = (b * T + i) * HP * HP + square
    if HAS_PRE:
        tl.store(dW1 + partial, dw1)
    if HAS_POST:
        tl.store(dW2 + partial, dw2)


def launch_config(dtype: torch.dtype) -> dict:
    """Launch options; MTA_TRITON_MIX_BLOCKS (a JSON object, e.g. '{"BLOCK_N": 256, "num_warps": 8}') overrides
    them for tuning. Defaults: the fastest of six on an H200 (Talking heads, T 4096: 4.6 ms fwd+bwd against 5.2-8.1
    ms; reports/bench/triton-mix-tune-h200.log). Float32 inputs mix in full precision; 16-bit ones in 3×TF32."""
    blocks = {"BLOCK_N": 64, "num_warps": 2, "PRECISION": "ieee" if dtype == torch.float32 else "tf32x3"}
    if "MTA_TRITON_MIX_BLOCKS" in os.environ:
        blocks |= json.loads(os.environ["MTA_TRITON_MIX_BLOCKS"])
    return blocks


def _scores_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a bᵀ over the last two axes in float32, (B, H, T, d) x (B, H, T', d) -> (B, H, T, T'); 16-bit inputs on a GPU
    multiply on tensor cores with float32 output (cuBLAS, torch >= 2.8), others in float32."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        lead = a.shape[:-2]
        try:
            out = torch.bmm(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]).transpose(1, 2),
                            out_dtype=torch.float32)
            return out.view(*lead, a.shape[-2], b.shape[-2])
        except (TypeError, RuntimeError):  # a torch without 16-bit -> float32 products: upcast first
            pass
    return a.float() @ b.float().transpose(-2, -1)


def full_post_matrix(head_post: torch.Tensor) -> torch.Tensor:
    """Grouped post-softmax mixing (G, c_h, c_h) [group, in, out] as the block-diagonal H×H matrix [out, in]."""
    return torch.block_diag(*head_post.transpose(1, 2))


def _padded(matrix: torch.Tensor | None, hp: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros(hp, hp, device=device, dtype=torch.float32)
    if matrix is not None:
        out[:matrix.shape[0], :matrix.shape[1]] = matrix.float()
    return out


class HeadMixAttention(torch.autograd.Function):
    """(q, k, v, W₁ or None, W₂ or None) -> O; q, k, v (B, H, T, d); W₁, W₂ (H, H) [out, in]."""

    @staticmethod
    def forward(ctx, q, k, v, w1, w2):
        b, h, t, d = q.shape
        hp = max(16, triton.next_power_of_2(h))
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        w1p, w2p = _padded(w1, hp, q.device), _padded(w2, hp, q.device)
        scores = _scores_f32(q, k)  # q kᵀ; the kernels apply the 1/√d scale as they load it
        probs = torch.empty(b, h, t, t, device=q.device, dtype=v.dtype)
        lse = torch.empty(b, h, t, device=q.device, dtype=torch.float32)
        _mix_fwd[(t, b)](scores, w1p, w2p, probs, lse, h, t, 1.0 / math.sqrt(d),
                         scores.stride(0), scores.stride(1), probs.stride(0), probs.stride(1),
                         HP=hp, HAS_PRE=w1 is not None, HAS_POST=w2 is not None, **launch_config(q.dtype))
        del scores
        ctx.save_for_backward(q, k, v, lse, w1p, w2p)
        ctx.has = (w1 is not None, w2 is not None)
        return probs @ v

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, lse, w1p, w2p = ctx.saved_tensors
        has_pre, has_post = ctx.has
        b, h, t, d = q.shape
        hp = w1p.shape[0]
        grad_out = grad_out.contiguous().to(v.dtype)
        scores = _scores_f32(q, k)
        d_probs = _scores_f32(grad_out, v)  # dP̂ = dO vᵀ
        d_scores = torch.empty(b, h, t, t, device=q.device, dtype=q.dtype)
        probs = torch.empty(b, h, t, t, device=q.device, dtype=v.dtype)
        partials = torch.empty(2, b * t, hp, hp, device=q.device, dtype=torch.float32)  # dW₁, dW₂ per row
        _mix_bwd[(t, b)](scores, d_probs, lse, w1p, w2p, d_scores, probs, partials[0], partials[1], h, t,
                         1.0 / math.sqrt(d), scores.stride(0), scores.stride(1), d_scores.stride(0),
                         d_scores.stride(1), HP=hp, HAS_PRE=has_pre, HAS_POST=has_post, **launch_config(q.dtype))
        del scores, d_probs
        dq = d_scores @ k
        dk = d_scores.transpose(-2, -1) @ q
        dv = probs.transpose(-2, -1) @ grad_out
        grads = partials.sum(1)[:, :h, :h]
        return dq, dk, dv, grads[0] if has_pre else None, grads[1] if has_post else None


@torch.compiler.disable  # a graph break under torch.compile: the kernels launch as they are
def head_mix_attention(q, k, v, head_pre=None, head_post=None):
    """Steps 1, 3, 4, 6, 8 of the op (no key-query convolutions, no dropout) through the kernels above."""
    w2 = full_post_matrix(head_post) if head_post is not None else None
    out_dtype = q.dtype
    return HeadMixAttention.apply(q, k, v, head_pre, w2).to(out_dtype)


def triton_mix_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both",
                  dropout_p=0.0):
    """`head_mix_attention` (a call `policy.mixing_only` admits: the registry checks)."""
    return head_mix_attention(q, k, v, head_pre, head_post)


register(Backend(
    "triton_mix",
    triton_mix_op,
    devices=("cuda",),
    calls="calls with head mixing (head_pre and/or head_post) and no kq conv, without dropout",
    implements=mixing_only,
    materialises=True,
    description="cuBLAS products around Triton kernels that mix all heads of a query row; T x T maps only within "
                "one call",
))
