"""Fused pre-softmax key-query convolution through FlexAttention: no T × T tensor.

`decomposition.py` turns the convolution into attention between stacked queries Q̂ and key-convolved keys K̂ (a head
of width c_q·d) plus an exact correction C on a band of W diagonals. Here softmax, causal mask and values run
in one flash-style kernel: FlexAttention with a score_mod that subtracts C on the band. Backward is
FlexAttention's (recomputation) for Q̂, K̂, V; C's gradient -dS on the band comes from W dot products per row
(`BandAttention`), and autograd carries it through the cheap O(T·W) pieces. Memory is linear in T.

Covers calls with a pre-softmax kq conv and nothing else, without dropout (FlexAttention has none); CUDA only
(FlexAttention has no CPU backward). Other calls go to another backend under backend=auto (`policy.py`).
"""

from __future__ import annotations

import functools
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import flex_attention as _flex_attention  # noqa: F401  (ImportError: backend unavailable)

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.backends.policy import kq_pre_only
from mta_lab.attention.decomposition import band_scores, kq_conv_attention
from mta_lab.attention.reference import work_dtype


@functools.lru_cache(maxsize=32)
def _causal_block_mask(t: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, t, t, device=device)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # One compile per shape and grad mode: past Dynamo's default limit of 8 it would silently fall back to the
    # unfused FlexAttention, which materialises T × T scores (a benchmark over six lengths reaches it).
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))
    return torch.compile(flex_attention, dynamic=False)


def kernel_options(head_dim: int, element_size: int) -> dict:
    """FlexAttention tile sizes for a stacked head of width `head_dim` (Triton pads it to a power of two).

    The defaults are tuned for heads of 64-128; a c_q·d-wide head overflows the H100/H200's 227 KiB of shared
    memory unless the key/query tiles shrink with the width. MTA_FLEX_OPTIONS (JSON) overrides, for tuning.
    """
    if "MTA_FLEX_OPTIONS" in os.environ:
        return json.loads(os.environ["MTA_FLEX_OPTIONS"])
    row_bytes = (1 << (head_dim - 1).bit_length()) * element_size  # one padded row of q or k
    if row_bytes <= 512:
        return {}
    # A query tile of `large` rows and a key tile of `large // 2` rows in ~200 KiB, one pipeline stage.
    large = max(16, min(64, 1 << int(math.log2(136 * 1024 // row_bytes))))
    small = max(16, large // 2)
    return {"num_stages": 1, "BLOCK_M": large, "BLOCK_N": small,
            "bwd_BLOCK_M1": small, "bwd_BLOCK_N1": large, "bwd_BLOCK_M2": large, "bwd_BLOCK_N2": small}


def flex_attend(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """FlexAttention over the stacked head with C subtracted on the band: (out, row log-sum-exp)."""
    t, w = q_hat.shape[2], correction.shape[-1]

    def subtract_band(score, b, h, q_idx, kv_idx):
        delta = q_idx - kv_idx
        inside = (delta >= 0) & (delta < w)
        return torch.where(inside, score - correction[b, h, q_idx, delta.clamp(0, w - 1)], score)

    options = dict(score_mod=subtract_band if w else None, block_mask=_causal_block_mask(t, q_hat.device),
                   scale=scale, return_lse=True)
    if q_hat.is_cuda:
        flex = _compiled_flex()
        options["kernel_options"] = kernel_options(q_hat.shape[-1], q_hat.element_size())
    else:
        flex = _eager_flex()
    return flex(q_hat, k_hat, v, **options)


def dense_attend(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """`flex_attend` materialised (any device, differentiable): the CPU stand-in for testing `BandAttention`."""
    scores = band_scores(q_hat, k_hat, correction, scale)
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.exp(scores - lse[..., None]) @ v.to(scores.dtype)
    return out.to(v.dtype), lse


def band_gradient(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, out: Tensor, lse: Tensor,
                  grad_out: Tensor, scale: float) -> Tensor:
    """dLoss/dC = -dS on the band, dS = P ⊙ (dP - Δ), from W dot products per row (FlashAttention's backward
    identities: P = exp(s - lse), dP = dO·v_j, Δ = dO·O)."""
    t, w = q_hat.shape[2], correction.shape[-1]
    work = work_dtype(q_hat.dtype)
    qf, kf, vf, go = (x.to(work) for x in (q_hat, k_hat, v, grad_out))
    delta_row = (go * out.to(work)).sum(-1)
    grads = []
    for d in range(w):  # diagonal d: key j = i - d, zero rows i < d
        k_d = F.pad(kf, (0, 0, d, 0))[:, :, :t]
        v_d = F.pad(vf, (0, 0, d, 0))[:, :, :t]
        score = (qf * k_d).sum(-1) * scale - correction[..., d].to(work)
        prob = torch.exp(score - lse.to(work))
        d_prob = (go * v_d).sum(-1)
        grads.append(-(prob * (d_prob - delta_row)))
    grad = torch.stack(grads, dim=-1)
    valid = torch.arange(t, device=grad.device)[:, None] >= torch.arange(w, device=grad.device)[None, :]
    return (grad * valid).to(correction.dtype)


class BandAttention(torch.autograd.Function):
    """Attention over the stacked head with a band correction C, differentiable in C without a scatter.

    FlexAttention can differentiate a captured buffer, but does so with an atomic add for every score it
    visits (and the out-of-band ones all land on one clamped index); here C is a constant to FlexAttention and
    its gradient comes from `band_gradient` (W dot products per row). Backward recomputes the forward.
    """

    @staticmethod
    def forward(ctx, q_hat, k_hat, v, correction, scale, attend):
        out, lse = attend(q_hat, k_hat, v, correction, scale)
        ctx.save_for_backward(q_hat, k_hat, v, correction, out, lse)
        ctx.scale, ctx.attend = scale, attend
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q_hat, k_hat, v, correction, out, lse = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in (q_hat, k_hat, v)]
            again, _ = ctx.attend(*leaves, correction.detach(), ctx.scale)
        d_q, d_k, d_v = torch.autograd.grad(again, leaves, grad_out)
        d_c = None
        if ctx.needs_input_grad[3] and correction.shape[-1]:
            d_c = band_gradient(q_hat, k_hat, v, correction, out, lse, grad_out, ctx.scale)
        return d_q, d_k, d_v, d_c, None, None


@torch.compiler.disable  # a graph break inside compiled models: FlexAttention is compiled on its own
def flex_core(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float, *,
              attend=flex_attend) -> Tensor:
    """`decomposition.dense_core`'s function without any T × T tensor (FlexAttention, compiled on CUDA)."""
    if not torch.is_grad_enabled() or not any(x.requires_grad for x in (q_hat, k_hat, v, correction)):
        return attend(q_hat, k_hat, v, correction, scale)[0]
    return BandAttention.apply(q_hat, k_hat, v, correction, scale, attend)


def _eager_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def flex_op(q, k, v, *, kq_pre, head_pre=None, kq_post=None, head_post=None, pad_key="both", dropout_p=0.0):
    """`kq_conv_attention` through `flex_core` (a call `policy.kq_pre_only` admits: the registry checks)."""
    return kq_conv_attention(q, k, v, kq_pre, pad_key, core=flex_core)


register(Backend(
    "flex",
    flex_op,
    devices=("cuda",),
    calls="calls with a pre-softmax kq conv and no other option, without dropout",
    implements=kq_pre_only,
    description="stacked queries x key-convolved keys + exact band, FlexAttention (CUDA; linear memory)",
))
