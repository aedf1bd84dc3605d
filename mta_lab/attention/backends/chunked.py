"""The "chunked" backend: the reference MTA op with memory linear in T (any device, dtype and option).

Query rows are processed in chunks of `chunk` rows. Each chunk is computed exactly by the reference's own
steps (`reference.kq_conv`, `mix_heads_pre`, `mix_heads_post`) on a slab of the score matrix, inside
`torch.utils.checkpoint` (non-reentrant), so backward keeps only each chunk's output and recomputes its scores:
the largest live tensor is B×H×(chunk + halo)×T instead of B×H×T×T.

Exactness (step numbers from `mta-spec.md` §2; c1 = kq_pre's (c_q, c_k), c2 = kq_post's):
- Rows. Output rows [s, e) are the post-softmax convolution of probability rows [s - (c2_q - 1), e) (kernel
  row c_q - 1 is the current query, rows above it earlier queries only). Those probability rows are the
  softmax of pre-convolution rows [s - (c2_q - 1) - (c1_q - 1), e) of Mask_0(S). Rows below 0 are the zero
  padding that `kq_conv` adds itself, so the halo is clipped at 0. The first halo rows of each convolution
  output read the slab's zero padding instead of real rows and are discarded.
- Keys. Rows < e only see keys < e, so the slab has key columns [0, e). A convolution tap at column j reads
  columns j - o .. j - o + c_k - 1 (o = p, c_k - 1 or 0 for pad_key both / left / right); columns >= e are
  beyond every slab row's own index, where the reference's input is 0 (Mask_0 before the pre-softmax
  convolution; exp(-inf) = 0 probabilities before the post-softmax one), exactly what `kq_conv`'s zero
  padding supplies. Columns j > i of a row are then -inf-masked / re-zeroed as in the reference.
- Head mixing acts per (i, j) across heads, so it commutes with the row/column slicing.
- Dropout (step 7) is drawn per chunk; checkpoint restores the RNG state, so recomputation draws the same mask
  (the mask differs from the eager backend's draw for the same seed, as it consumes the RNG differently).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.reference import kq_conv, mix_heads_post, mix_heads_pre, work_dtype

DEFAULT_CHUNK = 256
MIN_CHUNK = 16
CHUNK_ELEMENT_BUDGET = 1 << 27  # B·H·chunk·T elements of one chunk's score slab (512 MiB in float32)


def default_chunk(batch: int, heads: int, t: int) -> int:
    """DEFAULT_CHUNK rows, fewer when B·H·chunk·T would exceed CHUNK_ELEMENT_BUDGET (but not below MIN_CHUNK)."""
    fit = CHUNK_ELEMENT_BUDGET // max(1, batch * heads * t)
    return max(1, min(t, DEFAULT_CHUNK, max(MIN_CHUNK, fit)))


def _query_halos(kq_pre: Tensor | None, kq_post: Tensor | None) -> tuple[int, int]:
    """(pre, post): extra earlier query rows each kq convolution reads (c_q - 1; 0 when absent)."""
    pre = kq_pre.shape[1] - 1 if kq_pre is not None else 0
    post = kq_post.shape[1] - 1 if kq_post is not None else 0
    return pre, post


def _chunk_rows(
    start: int,
    end: int,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kq_pre: Tensor | None,
    head_pre: Tensor | None,
    kq_post: Tensor | None,
    head_post: Tensor | None,
    pad_key: str,
    dropout_p: float,
) -> Tensor:
    """Exact output rows [start, end) of the op (work dtype), from q, k, v of the full sequence."""
    halo_pre, halo_post = _query_halos(kq_pre, kq_post)
    prob_start = max(0, start - halo_post)  # probability rows the post-softmax conv reads
    score_start = max(0, prob_start - halo_pre)  # Mask_0(S) rows the pre-softmax conv reads
    rows = torch.arange(score_start, end, device=q.device)
    cols = torch.arange(end, device=q.device)
    visible = cols.unsqueeze(0) <= rows.unsqueeze(1)  # (end - score_start, end), global indices

    keys = k[:, :, :end]
    scores = q[:, :, score_start:end] @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # step 1
    if kq_pre is not None:  # step 2 (rows before prob_start read the slab's padding: dropped)
        scores = kq_conv(scores.masked_fill(~visible, 0.0), kq_pre, pad_key)
    scores = scores[:, :, prob_start - score_start:]
    visible = visible[prob_start - score_start:]
    if head_pre is not None:  # step 3
        scores = mix_heads_pre(scores, head_pre)
    probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)  # step 4
    if kq_post is not None:  # step 5
        probs = kq_conv(probs, kq_post, pad_key)
    probs = probs[:, :, start - prob_start:]
    if kq_post is not None:
        probs = probs.masked_fill(~visible[start - prob_start:], 0.0)
    if head_post is not None:  # step 6
        probs = mix_heads_post(probs, head_post)
    if dropout_p > 0.0:  # step 7
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v[:, :, :end]  # step 8


def chunked_multi_token_attention(
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
    chunk: int | None = None,
) -> Tensor:
    """`reference.multi_token_attention`, computed `chunk` query rows at a time with recomputation in backward.

    chunk: query rows per chunk (None: `default_chunk(B, H, T)`). Memory: O(B·H·(chunk + halo)·T) live during
    forward or one chunk's backward, plus the (B, H, T, d) outputs; halo = (c_q - 1) of kq_post + (c_q - 1) of
    kq_pre.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"expected q, k, v of shape (B, H, T, d); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    batch, heads, t, _ = q.shape
    if chunk is None:
        chunk = default_chunk(batch, heads, t)
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: must be >= 1")
    out_dtype = q.dtype
    work = work_dtype(q.dtype)
    q, k, v = q.to(work), k.to(work), v.to(work)
    tensors = (q, k, v, kq_pre, head_pre, kq_post, head_post)
    recompute = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)

    outputs = []
    for start in range(0, t, chunk):
        end = min(t, start + chunk)
        args = (start, end, *tensors, pad_key, dropout_p)
        if recompute:
            outputs.append(checkpoint(_chunk_rows, *args, use_reentrant=False))
        else:
            outputs.append(_chunk_rows(*args))
    if not outputs:  # T = 0
        return (q @ k.transpose(-2, -1) @ v).to(out_dtype)
    return torch.cat(outputs, dim=2).to(out_dtype)


register(Backend(  # never chosen by "auto" (eager is faster where it fits): pin backend=chunked for long T
    "chunked",
    chunked_multi_token_attention,
    description="linear memory in T: query chunks with halos, recomputed in backward; any option",
))
