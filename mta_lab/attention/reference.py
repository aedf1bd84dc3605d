"""The reference Multi-Token Attention op: eager, materialised, any device and dtype (float64 included).

Every fused backend computes this same function and is tested against it. Step numbers refer to
`mta-spec.md` §2. Shapes: q, k, v (B, H, T, d), after RoPE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.spec import key_center


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision inputs are computed in float32 (the spec's softmax precision, and the reference's)."""
    return torch.promote_types(dtype, torch.float32)


def causal_mask(t_q: int, t_k: int, device: torch.device) -> Tensor:
    """Boolean (t_q, t_k) mask, True where key j may be seen from query i (j <= i)."""
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril()


def kq_conv(scores: Tensor, kernel: Tensor, pad_key: str = "both") -> Tensor:
    """Depthwise key-query convolution of (B, H, T, T) maps with a (H, c_q, c_k) kernel, zero padded.

    out[h, i, j] = Σ_{a,b} kernel[h, a, b] · x[h, i - (c_q - 1) + a, j - o + b], where o is p = (c_k - 1)/2
    for pad_key="both", c_k - 1 for "left" (past keys) and 0 for "right" (later keys). Kernel row
    c_q - 1 is the current query; rows above it read earlier queries only. The caller masks the input.
    """
    n_heads, c_q, c_k = kernel.shape
    left = key_center(c_k, pad_key)  # checks pad_key
    if scores.shape[1] != n_heads:
        raise ValueError(f"kernel has {n_heads} heads but the scores have {scores.shape[1]}")
    if pad_key == "both" and c_k % 2 == 0:
        raise ValueError(f"pad_key='both' needs an odd c_k, got c_k={c_k}")
    # F.pad order: (key left, key right, query top, query bottom).
    padded = F.pad(scores, (left, c_k - 1 - left, c_q - 1, 0))
    weight = kernel.to(scores.dtype).unsqueeze(1)  # (H, 1, c_q, c_k): one filter per head
    return F.conv2d(padded, weight, groups=n_heads)


def causal_kq_conv(x: Tensor, kernel: Tensor, pad_key: str = "both") -> Tensor:
    """`kq_conv` of causal (B, H, T, T) maps: the input's strict upper triangle zeroed before (Mask_0 of step 2;
    softmax probabilities are zero there already) and the output's after (the re-zeroing of step 5; before step
    4's -inf mask it changes nothing). Fast backends replace this function (`backends/triton_conv.py`)."""
    visible = causal_mask(x.shape[-2], x.shape[-1], x.device)
    return kq_conv(x.masked_fill(~visible, 0.0), kernel, pad_key).masked_fill(~visible, 0.0)


def mix_heads_pre(scores: Tensor, weight: Tensor) -> Tensor:
    """Step 3: S''[h] = Σ_{h'} W[h, h'] S'[h'], weight (H, H) indexed [out, in]."""
    return torch.einsum("oh,bhij->boij", weight.to(scores.dtype), scores)


def mix_heads_post(probs: Tensor, weight: Tensor) -> Tensor:
    """Step 6: grouped mixing of contiguous heads, weight (G, c_h, c_h) indexed [group, in, out]."""
    b, h, t_q, t_k = probs.shape
    groups, c_h, _ = weight.shape
    if groups * c_h != h:
        raise ValueError(f"head_post has {groups} groups of {c_h} heads but the input has {h} heads")
    grouped = probs.reshape(b, groups, c_h, t_q, t_k)
    mixed = torch.einsum("gco,bgcij->bgoij", weight.to(probs.dtype), grouped)
    return mixed.reshape(b, h, t_q, t_k)


def multi_token_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    kq_pre: Tensor | None = None,
    head_pre: Tensor | None = None,
    kq_post: Tensor | None = None,
    head_post: Tensor | None = None,
    pad_key: str = "both",
    dropout_p: float = 0.0,
) -> Tensor:
    """MTA steps 1-8: per-head outputs (B, H, T, d) before group norm, gate and output projection.

    kq_pre / kq_post: (H, c_q, c_k) kernels; head_pre: (H, H) [out, in]; head_post: (H // c_h, c_h, c_h)
    [group, in, out]. dropout_p is applied as given (pass 0 in eval mode). With every option None this is
    causal softmax attention.
    """
    return materialised_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                                  pad_key=pad_key, dropout_p=dropout_p, conv=causal_kq_conv)


def materialised_attention(q: Tensor, k: Tensor, v: Tensor, *, kq_pre: Tensor | None, head_pre: Tensor | None,
                           kq_post: Tensor | None, head_post: Tensor | None, pad_key: str, dropout_p: float,
                           conv, pre_scores=None) -> Tensor:
    """`multi_token_attention` with its causal key-query convolution `conv` (same signature as `causal_kq_conv`)
    given: the reference passes `causal_kq_conv`, the "triton_conv" backend its Triton kernels. `pre_scores(q, k,
    kq_pre, pad_key)`, if given, computes steps 1-2 instead (S', any finite value above the diagonal): the
    "stacked" backend's matrix product."""
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k, v of shape (B, H, T, d); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    out_dtype = q.dtype
    work = work_dtype(q.dtype)
    q, k, v = q.to(work), k.to(work), v.to(work)
    t = q.shape[2]
    visible = causal_mask(t, t, q.device)

    if kq_pre is not None and pre_scores is not None:  # steps 1-2 in one
        scores = pre_scores(q, k, kq_pre, pad_key)
    else:
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # step 1: scale before any convolution
        if kq_pre is not None:  # step 2: Mask_0, then the zero-padded convolution
            scores = conv(scores, kq_pre, pad_key)
    if head_pre is not None:  # step 3
        scores = mix_heads_pre(scores, head_pre)
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)  # step 4
    if kq_post is not None:  # step 5: future probabilities are already 0; re-zero after the conv
        probs = conv(probs, kq_post, pad_key)
    if head_post is not None:  # step 6
        probs = mix_heads_post(probs, head_post)
    if dropout_p > 0.0:  # step 7
        probs = F.dropout(probs, p=dropout_p)
    return (probs @ v).to(out_dtype)  # step 8


def diff_attention(
    q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor | float, dropout_p: float = 0.0
) -> Tensor:
    """DIFF Transformer: (softmax(Q1 K1ᵀ/√d) - λ·softmax(Q2 K2ᵀ/√d)) V, causal, d the width of q1.

    q1, k1, q2, k2: (B, H, T, d); v: (B, H, T, d_v); λ a scalar (tensor). Dropout acts on the combined weights.
    """
    out_dtype = q1.dtype
    work = work_dtype(q1.dtype)
    t = q1.shape[2]
    visible = causal_mask(t, t, q1.device)
    scale = 1.0 / math.sqrt(q1.shape[-1])

    def probs(q: Tensor, k: Tensor) -> Tensor:
        s = (q.to(work) @ k.to(work).transpose(-2, -1)) * scale
        return torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1)

    weights = probs(q1, k1) - lam * probs(q2, k2)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return (weights @ v.to(work)).to(out_dtype)
