"""Triton kernels for attention over a wide stacked head with a band correction (the kq conv's `BandAttention`).

Computes, per (batch·head), out = softmax(scale·Q̂K̂ᵀ − C on the band, causal) V, where Q̂ and K̂ have width
DK = c_q·d (any size: the kernels loop over it in chunks of BLOCK_K, so nothing is padded to a power of two)
and C (T, W) is subtracted from score (i, i − δ) for 0 <= δ < W (see `decomposition.py`).

Forward: FlashAttention-2 style online softmax, one program per query block, writing the row log-sum-exp.
Backward: one program per query block recomputes the scores block by block and, from dS = P ⊙ (dP − Δ),
accumulates dQ̂ in place (the program owns its rows), dK̂ and dV with atomic adds, and writes dC = −dS on the
band (each band entry belongs to exactly one program). The matmul work equals FlashAttention's at width DK.

Correct against the eager op in Triton's interpreter (TRITON_INTERPRET=1 on CPU, fp32, forward and every gradient)
and on an H200 (fp32 and bf16, tests/attention/backends/test_triton.py). Backend "triton", available where Triton
is installed. Tiles from a search on the H200 (reports/bench/triton-tune-h200.log, kq_pre 6x11 at T 4096).
"""

from __future__ import annotations

import json
import os

import torch
import triton
import triton.language as tl

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.backends.policy import kq_pre_only
from mta_lab.attention.decomposition import kq_conv_attention


@triton.jit
def _corrected_scores(q_base, k_base, c_base, offs_m, offs_n, row_ok, col_ok, DK, W, scale, stride_qt, stride_ct,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """scale·Q̂K̂ᵀ of one (query block, key block) tile, the width looped in BLOCK_K chunks, minus C on the band
    (not yet causally masked)."""
    offs_k = tl.arange(0, BLOCK_K)
    s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for kk in range(0, DK, BLOCK_K):
        k_ok = (kk + offs_k) < DK
        q = tl.load(q_base + offs_m[:, None] * stride_qt + (kk + offs_k)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        k = tl.load(k_base + offs_n[:, None] * stride_qt + (kk + offs_k)[None, :],
                    mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        s += tl.dot(q, tl.trans(k), input_precision=PRECISION)
    delta = offs_m[:, None] - offs_n[None, :]
    in_band = (delta >= 0) & (delta < W) & row_ok[:, None] & col_ok[None, :]
    return s * scale - tl.load(c_base + offs_m[:, None] * stride_ct + delta, mask=in_band, other=0.0)


@triton.jit
def _band_fwd(Q, K, V, C, Out, Lse, T, DK, DV, W, scale,
              stride_qb, stride_qt, stride_vb, stride_vt, stride_cb, stride_ct, stride_ob, stride_ot,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DV: tl.constexpr,
              PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_base = Q + bh * stride_qb
    k_base = K + bh * stride_qb
    v_base = V + bh * stride_vb
    c_base = C + bh * stride_cb
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    row_ok = offs_m < T
    hi = (pid_m + 1) * BLOCK_M  # causal: key blocks up to the diagonal (columns >= T masked)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < T
        s = _corrected_scores(q_base, k_base, c_base, offs_m, offs_n, row_ok, col_ok, DK, W, scale, stride_qt,
                              stride_ct, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        delta = offs_m[:, None] - offs_n[None, :]
        s = tl.where((delta >= 0) & col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_dv[None, :],
                    mask=col_ok[:, None] & (offs_dv[None, :] < DV), other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(row_ok, l_i, 1.0)
    out = acc / l_safe[:, None]
    tl.store(Out + bh * stride_ob + offs_m[:, None] * stride_ot + offs_dv[None, :], out.to(Out.dtype.element_ty),
             mask=row_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(Lse + bh * T + offs_m, m_i + tl.log(l_safe), mask=row_ok)


@triton.jit
def _band_bwd(Q, K, V, C, dO, Lse, Delta, dQ, dK, dV, dC, T, DK, DV, W, scale,
              stride_qb, stride_qt, stride_vb, stride_vt, stride_cb, stride_ct,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DV: tl.constexpr,
              PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    offs_dv = tl.arange(0, BLOCK_DV)
    row_ok = offs_m < T
    dv_ok = offs_dv < DV
    q_base, k_base, c_base = Q + bh * stride_qb, K + bh * stride_qb, C + bh * stride_cb
    dq_base, dk_base = dQ + bh * stride_qb, dK + bh * stride_qb
    v_base, dv_base = V + bh * stride_vb, dV + bh * stride_vb
    do = tl.load(dO + bh * stride_vb + offs_m[:, None] * stride_vt + offs_dv[None, :],
                 mask=row_ok[:, None] & dv_ok[None, :], other=0.0)
    lse = tl.load(Lse + bh * T + offs_m, mask=row_ok, other=0.0)
    delta_row = tl.load(Delta + bh * T + offs_m, mask=row_ok, other=0.0)
    hi = (pid_m + 1) * BLOCK_M  # causal: key blocks up to the diagonal (columns >= T masked)
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_ok = offs_n < T
        s = _corrected_scores(q_base, k_base, c_base, offs_m, offs_n, row_ok, col_ok, DK, W, scale, stride_qt,
                              stride_ct, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        delta = offs_m[:, None] - offs_n[None, :]
        in_band = (delta >= 0) & (delta < W) & row_ok[:, None] & col_ok[None, :]
        visible = (delta >= 0) & col_ok[None, :] & row_ok[:, None]
        p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_dv[None, :],
                    mask=col_ok[:, None] & dv_ok[None, :], other=0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION).to(tl.float32)
        ds = p * (dp - delta_row[:, None])  # dLoss/dscore (after the scale and the correction)
        tl.store(dC + bh * stride_cb + offs_m[:, None] * stride_ct + delta, -ds, mask=in_band)  # dC = -dS
        d_v = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION).to(tl.float32)
        tl.atomic_add(dv_base + offs_n[:, None] * stride_vt + offs_dv[None, :], d_v,
                      mask=col_ok[:, None] & dv_ok[None, :])
        ds_scaled = (ds * scale).to(Q.dtype.element_ty)
        for kk in range(0, DK, BLOCK_K):
            k_ok = (kk + offs_k) < DK
            q = tl.load(q_base + offs_m[:, None] * stride_qt + (kk + offs_k)[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            k = tl.load(k_base + offs_n[:, None] * stride_qt + (kk + offs_k)[None, :],
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            dq_ptr = dq_base + offs_m[:, None] * stride_qt + (kk + offs_k)[None, :]
            dq_mask = row_ok[:, None] & k_ok[None, :]
            dq = tl.load(dq_ptr, mask=dq_mask, other=0.0)
            dq += tl.dot(ds_scaled, k, input_precision=PRECISION).to(tl.float32)
            tl.store(dq_ptr, dq, mask=dq_mask)  # this program owns rows offs_m
            d_k = tl.dot(tl.trans(ds_scaled), q, input_precision=PRECISION).to(tl.float32)
            tl.atomic_add(dk_base + offs_n[:, None] * stride_qt + (kk + offs_k)[None, :], d_k,
                          mask=col_ok[:, None] & k_ok[None, :])


def tile_config(dv: int, dtype: torch.dtype, *, backward: bool) -> dict:
    """Tile sizes and launch options of one kernel (the forward's, or the backward's).

    MTA_TRITON_BLOCKS overrides them, for tuning (`mta-lab bench tune-triton`): a JSON object of kernel
    arguments ('{"BLOCK_M": 64, "num_warps": 8}', both kernels) or {"fwd": {...}, "bwd": {...}}. Float32 inputs
    multiply in full precision (not TF32), the reference's precision.
    """
    if dtype == torch.float32:  # the untuned first tiles (tested in fp32; larger ones may not fit)
        tiles = {"BLOCK_M": 64, "BLOCK_N": 32 if backward else 64, "BLOCK_K": 64}
    elif backward:  # 16-bit: the H200 search's best (kq_pre 6x11, T 4096: 14.7 vs 21.5 ms fwd+bwd at 64x32)
        tiles = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 8, "num_stages": 1}
    else:
        tiles = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
    blocks = {**tiles, "BLOCK_DV": max(16, triton.next_power_of_2(dv)),
              "PRECISION": "ieee" if dtype == torch.float32 else "tf32"}
    if "MTA_TRITON_BLOCKS" in os.environ:
        override = json.loads(os.environ["MTA_TRITON_BLOCKS"])
        if "fwd" in override or "bwd" in override:
            override = override.get("bwd" if backward else "fwd", {})
        blocks |= override
    return blocks


class TritonBandAttention(torch.autograd.Function):
    """(q̂, k̂, v, correction, scale) -> out; q̂, k̂ (B, H, T, DK), v (B, H, T, DV), correction (B, H, T, W)."""

    @staticmethod
    def forward(ctx, q_hat, k_hat, v, correction, scale):
        b, h, t, dk = q_hat.shape
        dv, w = v.shape[-1], correction.shape[-1]
        q2, k2 = q_hat.reshape(b * h, t, dk).contiguous(), k_hat.reshape(b * h, t, dk).contiguous()
        v2 = v.reshape(b * h, t, dv).contiguous()
        c2 = (correction.float().reshape(b * h, t, w).contiguous() if w
              else q2.new_zeros(b * h, t, 1, dtype=torch.float32))
        out = torch.empty_like(v2)
        lse = torch.empty(b * h, t, device=q_hat.device, dtype=torch.float32)
        blocks = tile_config(dv, q2.dtype, backward=False)
        grid = (triton.cdiv(t, blocks["BLOCK_M"]), b * h)
        _band_fwd[grid](q2, k2, v2, c2, out, lse, t, dk, dv, w, scale,
                        q2.stride(0), q2.stride(1), v2.stride(0), v2.stride(1), c2.stride(0), c2.stride(1),
                        out.stride(0), out.stride(1), **blocks)
        ctx.save_for_backward(q2, k2, v2, c2, out, lse)
        ctx.shape, ctx.scale, ctx.w = (b, h, t, dk, dv), scale, w
        return out.view(b, h, t, dv)

    @staticmethod
    def backward(ctx, grad_out):
        q2, k2, v2, c2, out, lse = ctx.saved_tensors
        b, h, t, dk, dv = ctx.shape
        do = grad_out.reshape(b * h, t, dv).contiguous().to(v2.dtype)
        delta = (do.float() * out.float()).sum(-1).contiguous()
        dq = torch.zeros(b * h, t, dk, device=q2.device, dtype=torch.float32)
        dk_ = torch.zeros_like(dq)
        dv_ = torch.zeros(b * h, t, dv, device=q2.device, dtype=torch.float32)
        dc = torch.zeros_like(c2)
        blocks = tile_config(dv, q2.dtype, backward=True)
        grid = (triton.cdiv(t, blocks["BLOCK_M"]), b * h)
        _band_bwd[grid](q2, k2, v2, c2, do, lse, delta, dq, dk_, dv_, dc, t, dk, dv, ctx.w, ctx.scale,
                        q2.stride(0), q2.stride(1), v2.stride(0), v2.stride(1), c2.stride(0), c2.stride(1), **blocks)
        d_corr = dc.view(b, h, t, -1) if ctx.w else None
        return (dq.view(b, h, t, dk).to(q2.dtype), dk_.view(b, h, t, dk).to(k2.dtype),
                dv_.view(b, h, t, dv).to(v2.dtype), d_corr, None)


@torch.compiler.disable  # a graph break under torch.compile: the kernels launch as they are
def triton_core(q_hat, k_hat, v, correction, scale: float):
    """`decomposition.dense_core`'s function (no dropout) through the Triton kernels above."""
    return TritonBandAttention.apply(q_hat, k_hat, v, correction, float(scale))


def triton_op(q, k, v, *, kq_pre, head_pre=None, kq_post=None, head_post=None, pad_key="both", dropout_p=0.0):
    """`kq_conv_attention` through `triton_core` (a call `policy.kq_pre_only` admits: the registry checks)."""
    return kq_conv_attention(q, k, v, kq_pre, pad_key, core=triton_core)


register(Backend(
    "triton",
    triton_op,
    devices=("cuda",),
    calls="calls with a pre-softmax kq conv and no other option, without dropout",
    implements=kq_pre_only,
    description="the stacked decomposition in hand-written Triton kernels (width c_q·d looped in chunks, no "
                "padding; linear memory)",
))
