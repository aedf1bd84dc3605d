"""Fused pre-softmax key-query convolution: MTA as one attention with a wider head (FlexAttention).

The identity (kernel-notes.md §1): with Q_a[i] = q_{i-(c_q-1)+a} and K̃_a[j] = Σ_b θ[a, b] k_{j-o+b} (zero padded;
o the key offset of `pad_key`), the unmasked convolution of the scores is

    F[i, j] = (1/√d) Σ_a Q_a[i] · K̃_a[j] = (1/√d) Q̂_i · K̂_j,   Q̂ = [Q_0 | ... | Q_{c_q-1}], K̂ likewise,

an ordinary dot product of width c_q·d. The spec masks the scores before the convolution (Mask_0: S[r, c] = 0
for c > r), so F differs from the spec's S' only where the kernel window reaches above the diagonal: the band
0 <= δ = i - j < W, W = (c_q - 1) + (c_k - 1 - o). There the masked terms are subtracted exactly:

    C[i, δ] = Σ_{a, b: c > r} θ[a, b] S[r, c],   r = i - (c_q - 1) + a,  c = i - δ - o + b,

which needs only the W "future" local scores L[r, m] = q_r · k_{r+m} / √d, m = 1..W, of every row
(T × W dot products). Softmax, causal mask and values then run in one flash-style kernel: FlexAttention
with a score_mod that subtracts C on the band. Nothing of size T × T is ever stored; backward is
FlexAttention's (recomputation) plus autograd through the cheap O(T·W) pieces.

Covers calls with a pre-softmax kq conv and nothing else (no head mixing, no post-softmax conv, no dropout:
FlexAttention has no dropout); other calls go to another backend under backend=auto.
"""

from __future__ import annotations

import functools
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.backends import register_backend
from mta_lab.attention.functional import multi_token_attention, work_dtype
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


def dense_core(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float) -> Tensor:
    """The wide-head attention with the band correction, materialised (the reference for `flex_core`)."""
    t, w = q_hat.shape[2], correction.shape[-1]
    work = work_dtype(q_hat.dtype)
    scores = (q_hat.to(work) @ k_hat.to(work).transpose(-2, -1)) * scale
    i = torch.arange(t, device=q_hat.device)
    delta = i[:, None] - i[None, :]
    in_band = (delta >= 0) & (delta < w)
    band = torch.gather(correction, -1, delta.clamp(0, max(w - 1, 0)).expand(*correction.shape[:2], t, t)) \
        if w else torch.zeros_like(scores)
    scores = scores - band * in_band
    probs = torch.softmax(scores.masked_fill(delta < 0, float("-inf")), dim=-1)
    return (probs @ v.to(work)).to(v.dtype)


@functools.lru_cache(maxsize=32)
def _causal_block_mask(t: int, device: torch.device):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, t, t, device=device)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

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
    large = max(16, min(128, 1 << int(math.log2(136 * 1024 // row_bytes))))
    small = max(16, large // 2)
    return {"num_stages": 1, "BLOCK_M": large, "BLOCK_N": small,
            "bwd_BLOCK_M1": small, "bwd_BLOCK_N1": large, "bwd_BLOCK_M2": large, "bwd_BLOCK_N2": small}


def flex_core(q_hat: Tensor, k_hat: Tensor, v: Tensor, correction: Tensor, scale: float) -> Tensor:
    """The same as `dense_core` through FlexAttention: no T × T tensor; compiled on CUDA."""
    t, w = q_hat.shape[2], correction.shape[-1]

    def subtract_band(score, b, h, q_idx, kv_idx):
        delta = q_idx - kv_idx
        inside = (delta >= 0) & (delta < w)
        return torch.where(inside, score - correction[b, h, q_idx, delta.clamp(0, w - 1)], score)

    if q_hat.is_cuda:
        return _compiled_flex()(q_hat, k_hat, v, score_mod=subtract_band if w else None,
                                block_mask=_causal_block_mask(t, q_hat.device), scale=scale,
                                kernel_options=kernel_options(q_hat.shape[-1], q_hat.element_size()))
    return _eager_flex()(q_hat, k_hat, v, score_mod=subtract_band if w else None,
                         block_mask=_causal_block_mask(t, q_hat.device), scale=scale)


def _eager_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def kq_conv_attention(q: Tensor, k: Tensor, v: Tensor, kernel: Tensor, pad_key: str = "both", *,
                      core=flex_core) -> Tensor:
    """Causal attention with a pre-softmax kq conv (spec steps 1, 2, 4, 8), (B, H, T, d) -> (B, H, T, d_v)."""
    c_q = kernel.shape[1]
    q_hat = stacked_queries(q, c_q)
    k_hat = convolved_keys(k, kernel, pad_key)
    correction = band_correction(q, k, kernel, pad_key)
    return core(q_hat, k_hat, v, correction, 1.0 / math.sqrt(q.shape[-1]))


def flex_multi_token_attention(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None,
                               pad_key="both", dropout_p=0.0) -> Tensor:
    """`multi_token_attention` for the calls `accepts_call` admits; any other call runs the eager op."""
    if not accepts_call(dict(kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                             dropout_p=dropout_p)):
        return multi_token_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post,
                                     head_post=head_post, pad_key=pad_key, dropout_p=dropout_p)
    return kq_conv_attention(q, k, v, kq_pre, pad_key)


def accepts_call(options: dict) -> bool:
    return (options.get("kq_pre") is not None and options.get("head_pre") is None
            and options.get("kq_post") is None and options.get("head_post") is None
            and not options.get("dropout_p"))


def flex_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False  # FlexAttention has no CPU backward
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


register_backend(
    "flex",
    flex_multi_token_attention,
    priority=10,
    supports=flex_available,
    accepts=accepts_call,
    description="pre-softmax kq conv only: stacked queries x key-convolved keys + exact band, FlexAttention "
                "(CUDA; linear memory)",
)
