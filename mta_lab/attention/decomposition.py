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

This module holds the decomposition, shared by the backends and owned by none: "stacked" runs it with
materialised scores (`dense_core`), "flex" and "triton" without any T × T tensor (their own cores), and for calls
that also mix heads or convolve after the softmax (the paper's config) "stacked" and "triton_conv" use the stacked
S' for steps 1-2 (`kq_pre_scores`).
"""


from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.reference import work_dtype
from mta_lab.attention.spec import key_center


def band_width(c_q: int, c_k: int, pad_key: str) -> int:
    """W: diagonals 0..W-1 (j = i - δ) where the mask inside the convolution matters."""
    return (c_q - 1) + (c_k - 1 - key_center(c_k, pad_key))


def stacked_queries(q: Tensor, c_q: int) -> Tensor:
    """Q̂ (B, H, T, c_q·d): block a holds q_{i-(c_q-1)+a} (zero before the sequence start)."""
    t = q.shape[2]
    padded = F.pad(q, (0, 0, c_q - 1, 0))
    return torch.cat([padded[:, :, a:a + t] for a in range(c_q)], dim=-1)


def convolved_keys(k: Tensor, kernel: Tensor, pad_key: str) -> Tensor:
    """K̂ (B, H, T, c_q·d): block a holds K̃_a[j] = Σ_b θ[h, a, b] k_{j-o+b}, as one depthwise conv1d over time."""
    b, h, t, d = k.shape
    _, c_q, c_k = kernel.shape
    left = key_center(c_k, pad_key)
    x = F.pad(k.transpose(2, 3).reshape(b, h * d, t), (left, c_k - 1 - left))  # (B, H·d, T + c_k - 1)
    # One group per (head, channel) with c_q outputs, each a kernel row of that head.
    weight = kernel.to(k.dtype)[:, None].expand(h, d, c_q, c_k).reshape(h * d * c_q, 1, c_k)
    out = F.conv1d(x, weight, groups=h * d)  # (B, H·d·c_q, T)
    return out.view(b, h, d, c_q, t).permute(0, 1, 4, 3, 2).reshape(b, h, t, c_q * d)


@functools.lru_cache(maxsize=64)
def _band_index(c_q: int, c_k: int, pad_key: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Index maps for G[α, m, δ] = θ[c_q-1-α, m+o+δ-α] on the terms that cross the diagonal (m >= 1)."""
    o, w = key_center(c_k, pad_key), band_width(c_q, c_k, pad_key)
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
    `reference.materialised_attention` needs from this module for calls that also mix heads or convolve after
    the softmax."""
    q_hat, k_hat = stacked_queries(q, kernel.shape[1]), convolved_keys(k, kernel, pad_key)
    return band_scores(q_hat, k_hat, band_correction(q, k, kernel, pad_key), 1.0 / math.sqrt(q.shape[-1]), above=0.0)
