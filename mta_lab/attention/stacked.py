"""MTA's pre-softmax key-query convolution as a matrix product of stacked queries and key-convolved keys.

The identity (kernel-notes.md §1): with Q_a[i] = q_{i-(c_q-1)+a} and K̃_a[j] = Σ_b θ[a, b] k_{j-o+b} (zero padded;
o the key offset of `pad_key`), the unmasked convolution of the scores is

    F[i, j] = (1/√d) Σ_a Q_a[i] · K̃_a[j] = (1/√d) Q̂_i · K̂_j,   Q̂ = [Q_0 | ... | Q_{c_q-1}], K̂ likewise,

an ordinary dot product of width c_q·d. The spec masks the scores before the convolution (Mask_0: S[r, c] = 0
for c > r), so F differs from the spec's S' only where the kernel window reaches above the diagonal: the band
0 <= δ = i - j < W, W = (c_q - 1) + (c_k - 1 - o). There the masked terms are subtracted exactly:

    C[i, δ] = Σ_{a, b: c > r} θ[a, b] S[r, c],   r = i - (c_q - 1) + a,  c = i - δ - o + b,

which needs only the W "future" local scores L[r, m] = q_r · k_{r+m} / √d, m = 1..W, of every row
(T × W dot products).

This module holds the decomposition and the "stacked" backend, which runs it with materialised scores (a
matrix product on tensor cores instead of a depthwise convolution over B×H×T×T maps; dropout supported). For
calls that also mix heads or convolve after the softmax (the paper's config), the stacked S' replaces steps 1-2
and the reference runs steps 3-8 on it. `flex.py` and `triton_band.py` run the kq-only decomposition without
any T × T tensor.
"""


from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.backends import register_backend
from mta_lab.attention.functional import causal_kq_conv, materialised_attention, multi_token_attention, work_dtype
from mta_lab.attention.spec import PAD_KEYS


def key_offset(c_k: int, pad_key: str) -> int:
    """o: the kernel column b reads key j - o + b (functional.kq_conv's `left`)."""
    if pad_key not in PAD_KEYS:
        raise ValueError(f"pad_key={pad_key!r}: must be one of {', '.join(PAD_KEYS)}")
    return {"both": (c_k - 1) // 2, "left": c_k - 1, "right": 0}[pad_key]


def band_width(c_q: int, c_k: int, pad_key: str) -> int:
    """W: diagonals 0..W-1 (j = i - δ) where the mask inside the convolution matters."""
    return (c_q - 1) + (c_k - 1 - key_offset(c_k, pad_key))


def stacked_queries(q: Tensor, c_q: int) -> Tensor:
    """Q̂ (B, H, T, c_q·d): block a holds q_{i-(c_q-1)+a} (zero before the sequence start)."""
    t = q.shape[2]
    padded = F.pad(q, (0, 0, c_q - 1, 0))
    return torch.cat([padded[:, :, a:a + t] for a in range(c_q)], dim=-1)


def convolved_keys(k: Tensor, kernel: Tensor, pad_key: str) -> Tensor:
    """K̂ (B, H, T, c_q·d): block a holds K̃_a[j] = Σ_b θ[h, a, b] k_{j-o+b}, as one depthwise conv1d over time."""
    b, h, t, d = k.shape
    _, c_q, c_k = kernel.shape
    left = key_offset(c_k, pad_key)
    x = F.pad(k.transpose(2, 3).reshape(b, h * d, t), (left, c_k - 1 - left))  # (B, H·d, T + c_k - 1)
    # One group per (head, channel) with c_q outputs, each a kernel row of that head.
    weight = kernel.to(k.dtype)[:, None].expand(h, d, c_q, c_k).reshape(h * d * c_q, 1, c_k)
    out = F.conv1d(x, weight, groups=h * d)  # (B, H·d·c_q, T)
    return out.view(b, h, d, c_q, t).permute(0, 1, 4, 3, 2).reshape(b, h, t, c_q * d)


@functools.lru_cache(maxsize=64)
def _band_index(c_q: int, c_k: int, pad_key: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Index maps for G[α, m, δ] = θ[c_q-1-α, m+o+δ-α] on the terms that cross the diagonal (m >= 1)."""
    o, w = key_offset(c_k, pad_key), band_width(c_q, c_k, pad_key)
    alpha = torch.arange(c_q).view(c_q, 1, 1)
    m = torch.arange(1, w + 1).view(1, w, 1)
    delta = torch.arange(w).view(1, 1, w)
    col = m + o + delta - alpha
    valid = (col >= 0) & (col < c_k)
    row = (c_q - 1 - alpha).expand(c_q, w, w)
    return row.to(device), col.clamp(0, c_k - 1).to(device), valid.to(device)


def band_correction(q: Tensor, k: Tensor, kernel: Tensor, pad_key: str) -> Tensor:
    """C (B, H, T, W), float32 at least: the masked terms the stacked product F includes on diagonal δ of row i."""
    _, c_q, c_k = kernel.shape
    w = band_width(c_q, c_k, pad_key)
    b, h, t, _ = q.shape
    work = work_dtype(q.dtype)
    if w == 0:
        return q.new_zeros(b, h, t, 0, dtype=work)
    qf, kf = q.to(work), k.to(work)
    scale = 1.0 / math.sqrt(q.shape[-1])
    # L[r, m-1] = q_r · k_{r+m} / √d, m = 1..W (zero past the last key).
    k_ahead = F.pad(kf, (0, 0, 0, w))
    local = torch.stack([(qf * k_ahead[:, :, m:m + t]).sum(-1) for m in range(1, w + 1)], dim=-1) * scale
    # Row i reads row r = i - α: shift L down by α (zero before the start) -> (B, H, T, c_q, W).
    padded = F.pad(local, (0, 0, c_q - 1, 0))
    lagged = torch.stack([padded[:, :, c_q - 1 - a:c_q - 1 - a + t] for a in range(c_q)], dim=3)
    row, col, valid = _band_index(c_q, c_k, pad_key, kernel.device)
    g = kernel.to(work)[:, row, col] * valid  # (H, c_q, W, W) [α, m, δ]
    return torch.einsum("bhiam,hamd->bhid", lagged, g)


def band_scores(q_hat: Tensor, k_hat: Tensor, correction: Tensor, scale: float,
                above: float = float("-inf")) -> Tensor:
    """scale·Q̂K̂ᵀ with C subtracted on the band and `above` above the diagonal: the spec's S' (masked for the
    softmax by default), materialised in the work dtype."""
    t, w = q_hat.shape[2], correction.shape[-1]
    work = work_dtype(q_hat.dtype)
    scores = (q_hat.to(work) @ k_hat.to(work).transpose(-2, -1)) * scale
    for d in range(min(w, t)):  # diagonal d holds (i, i - d) for i >= d
        scores.diagonal(offset=-d, dim1=-2, dim2=-1).sub_(correction[..., d:, d].to(scores.dtype))
    visible = torch.ones(t, t, dtype=torch.bool, device=q_hat.device).tril()
    return scores.masked_fill(~visible, above)


def dense_core(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float,
               dropout_p: float = 0.0) -> Tensor:
    """The wide-head attention with the band correction, materialised (the reference for `flex_core`)."""
    probs = torch.softmax(band_scores(q_hat, k_hat, correction, scale), dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return (probs @ v.to(probs.dtype)).to(v.dtype)


def kq_conv_attention(q: Tensor, k: Tensor, v: Tensor, kernel: Tensor, pad_key: str = "both", *,
                      core=dense_core, **core_options) -> Tensor:
    """Causal attention with a pre-softmax kq conv (spec steps 1, 2, 4, 7, 8), (B, H, T, d) -> (B, H, T, d_v)."""
    c_q = kernel.shape[1]
    q_hat = stacked_queries(q, c_q)
    k_hat = convolved_keys(k, kernel, pad_key)
    correction = band_correction(q, k, kernel, pad_key)
    return core(q_hat, k_hat, v, correction, 1.0 / math.sqrt(q.shape[-1]), **core_options)


def kq_pre_scores(q: Tensor, k: Tensor, kernel: Tensor, pad_key: str) -> Tensor:
    """Steps 1-2 (S' = the masked, convolved scores, zero above the diagonal) as the stacked matrix product: what
    `functional.materialised_attention` needs from this module for calls that also mix heads or convolve after
    the softmax."""
    q_hat, k_hat = stacked_queries(q, kernel.shape[1]), convolved_keys(k, kernel, pad_key)
    return band_scores(q_hat, k_hat, band_correction(q, k, kernel, pad_key), 1.0 / math.sqrt(q.shape[-1]), above=0.0)


def has_kq_pre(options: dict) -> bool:
    """The call has a pre-softmax kq conv (whatever else it has): the part the stacked product replaces."""
    return options.get("kq_pre") is not None


def stacked_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both", dropout_p=0.0):
    """The "stacked" backend: kq-only calls as one wide-head attention (`dense_core`); calls that also mix heads
    or convolve after the softmax run the reference steps 3-8 on the stacked S'; calls without kq_pre, eager."""
    options = dict(kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post, dropout_p=dropout_p)
    if only_kq_pre(options):
        return kq_conv_attention(q, k, v, kq_pre, pad_key, core=dense_core, dropout_p=dropout_p)
    return materialised_attention(q, k, v, pad_key=pad_key, conv=causal_kq_conv,
                                  pre_scores=kq_pre_scores if kq_pre is not None else None, **options)


def only_kq_pre(options: dict) -> bool:
    """The call has a pre-softmax kq conv and no head mixing or post-softmax conv."""
    return (options.get("kq_pre") is not None and options.get("head_pre") is None
            and options.get("kq_post") is None and options.get("head_post") is None)


def without_dropout(options: dict) -> bool:
    """`only_kq_pre` for cores that have no dropout (FlexAttention, the Triton kernels)."""
    return only_kq_pre(options) and not options.get("dropout_p")


def kq_only_op(core, accepts):
    """A backend op: `kq_conv_attention` through `core` for the calls `accepts` admits, the eager op otherwise."""

    def op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both", dropout_p=0.0):
        options = dict(kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post, dropout_p=dropout_p)
        if not accepts(options):
            return multi_token_attention(q, k, v, pad_key=pad_key, **options)
        return kq_conv_attention(q, k, v, kq_pre, pad_key, core=core, **({"dropout_p": dropout_p} if dropout_p else {}))

    return op


register_backend(
    "stacked",
    stacked_op,
    priority=5,
    supports=lambda device: True,
    accepts=has_kq_pre,
    materialises=True,
    description="any call with a pre-softmax kq conv: stacked queries x key-convolved keys + exact band as one "
                "matrix product (materialised scores, dropout; any device); the rest of the op as eager",
)
