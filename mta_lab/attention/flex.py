"""Fused pre-softmax key-query convolution through FlexAttention: no T × T tensor.

`stacked.py` turns the convolution into attention between stacked queries Q̂ and key-convolved keys K̂ (a head
of width c_q·d) plus an exact correction C on a band of W diagonals. Here softmax, causal mask and values run
in one flash-style kernel: FlexAttention with a score_mod that subtracts C on the band. Backward is
FlexAttention's (recomputation) plus autograd through the cheap O(T·W) pieces, so memory is linear in T.

Covers calls with a pre-softmax kq conv and nothing else, without dropout (FlexAttention has none); CUDA only
(FlexAttention has no CPU backward). Other calls go to another backend under backend=auto.
"""

from __future__ import annotations

import functools
import json
import math
import os

import torch
from torch import Tensor

from mta_lab.attention.backends import register_backend
from mta_lab.attention.functional import multi_token_attention
from mta_lab.attention.stacked import kq_conv_attention, only_kq_pre


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
    large = max(16, min(64, 1 << int(math.log2(136 * 1024 // row_bytes))))
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


def flex_multi_token_attention(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None,
                               pad_key="both", dropout_p=0.0) -> Tensor:
    """`multi_token_attention` for the calls `accepts_call` admits; any other call runs the eager op."""
    if not accepts_call(dict(kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                             dropout_p=dropout_p)):
        return multi_token_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post,
                                     head_post=head_post, pad_key=pad_key, dropout_p=dropout_p)
    return kq_conv_attention(q, k, v, kq_pre, pad_key, core=flex_core)


def accepts_call(options: dict) -> bool:
    return only_kq_pre(options) and not options.get("dropout_p")


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
