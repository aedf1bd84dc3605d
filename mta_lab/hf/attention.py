"""The MTA op as a Hugging Face attention function, registered under the name "mta" (`register()`).

Transformers' attention modules compute q/k/v projections and RoPE, update their KV cache, then call
`ALL_ATTENTION_FUNCTIONS[config._attn_implementation](module, query, key, value, attention_mask, scaling=...)`;
`mta_attention` is that function for a module carrying `module.mta` (`parameters.MTAParameters`, put there by
`attach.attach`). Grouped-query keys and values are repeated to the query heads first. The mask function is
registered too: without one for "mta", transformers builds no mask at all (the causal mask would be dropped
silently for any op that relies on it). The op is causal by construction; the mask is checked to be the plain
causal one (a padding mask is refused).

Cached decoding (fewer query rows than keys): layers without score mixing use SDPA over the cached keys; layers
whose kernels read one query row (c_q = 1: Talking heads, key-axis-only kq convolutions) compute the new rows
against all cached keys, exactly. A kq convolution with c_q > 1 needs the past c_q - 1 query rows and probability
rows, which HF's KV cache does not keep: such a layer refuses cached calls, and `attach` sets the model's
`generation_config.use_cache = False` so `generate` recomputes the whole prefix for every new token (O(T²) per
token: correct, slower).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mta_lab.attention.backends import resolve
from mta_lab.attention.decoding import kq_conv_rows, visible
from mta_lab.attention.reference import mix_heads_post, mix_heads_pre, work_dtype
from mta_lab.hf.requirements import HFError

ATTENTION_NAME = "mta"


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, H_kv, T, d) -> (B, H_kv · n_rep, T, d): each key/value head serves n_rep consecutive query heads."""
    if n_rep == 1:
        return x
    b, h_kv, t, d = x.shape
    return x[:, :, None].expand(b, h_kv, n_rep, t, d).reshape(b, h_kv * n_rep, t, d)


def _check_mask(mask: Tensor | None, pos: int, n: int, t: int) -> None:
    """The op is causal: a mask that hides more than the causal one (padding) cannot be honoured."""
    if mask is None:
        return
    allowed = mask if mask.dtype == torch.bool else mask == 0
    allowed = allowed[..., -n:, -t:]
    if not torch.equal(allowed, visible(pos, n, t, mask.device).expand_as(allowed)):
        raise HFError("attention_mask hides tokens beyond the causal mask (padding); the MTA attention is causal "
                      "only: pass unpadded sequences of equal length (no attention_mask), or one sequence at a time")


def _cached_rows(mta: nn.Module, q: Tensor, k: Tensor, v: Tensor, pos: int) -> Tensor:
    """Spec steps 1-8 for query rows pos .. pos + n - 1 against keys 0 .. T - 1, for kernels of c_q = 1."""
    work = work_dtype(q.dtype)
    q, k, v = q.to(work), k.to(work), v.to(work)
    seen = visible(pos, q.shape[2], k.shape[2], q.device)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mta.kq_pre is not None:
        scores = kq_conv_rows(scores.masked_fill(~seen, 0.0), mta.kq_pre, mta.spec.pad_key)
    if mta.head_pre is not None:
        scores = mix_heads_pre(scores, mta.head_pre)
    probs = torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1)
    if mta.kq_post is not None:
        probs = kq_conv_rows(probs, mta.kq_post, mta.spec.pad_key).masked_fill(~seen, 0.0)
    if mta.head_post is not None:
        probs = mix_heads_post(probs, mta.head_post)
    return probs @ v


def mta_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                  scaling: float | None = None, dropout: float = 0.0, **kwargs) -> tuple[Tensor, None]:
    """query (B, H, n, d), key/value (B, H_kv, T, d) after RoPE and the cache -> ((B, n, H, d), None).

    Dropout is the spec's `attention.dropout` in training (transformers' `attention_dropout` is not used).
    """
    mta = getattr(module, "mta", None)
    if mta is None:
        raise HFError(f"attn_implementation={ATTENTION_NAME!r} on a model without MTA parameters: build it with "
                      "mta_lab.hf.attach(model, spec) or load it with mta_lab.hf.load_model(path)")
    if query.shape[1] % key.shape[1]:
        raise ValueError(f"{query.shape[1]} query heads are not a multiple of {key.shape[1]} key/value heads")
    n_rep = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    head_dim = query.shape[-1]
    if scaling is not None and abs(scaling * math.sqrt(head_dim) - 1.0) > 1e-12:
        query = query * (scaling * math.sqrt(head_dim))  # the op scales scores by 1/sqrt(d)
    n, t = query.shape[2], key.shape[2]
    pos = t - n
    _check_mask(attention_mask, pos, n, t)
    dropout_p = mta.spec.dropout if module.training else 0.0
    if not mta.mixes_scores:
        mask = None if n == t else visible(pos, n, t, query.device)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=n == t,
                                             dropout_p=dropout_p)
    elif n == t:
        options = dict(kq_pre=mta.kq_pre, head_pre=mta.head_pre, kq_post=mta.kq_post, head_post=mta.head_post,
                       pad_key=mta.spec.pad_key, dropout_p=dropout_p)
        hints = {"score_elements": query.shape[0] * query.shape[1] * n * n,
                 "compiling": torch.compiler.is_compiling()}
        backend = resolve(mta.spec.backend, query.device, {**options, **hints})
        module.resolved_backend = backend.name
        out = backend.fn(query, key, value, **options)
    elif mta.query_window > 1:
        raise HFError(f"layer {getattr(module, 'layer_idx', '?')} has a kq convolution over {mta.query_window} "
                      "query rows, which needs past queries that HF's KV cache does not keep: generate with "
                      "use_cache=False (the default attach sets in model.generation_config)")
    else:
        out = _cached_rows(mta, query, key, value, pos).to(query.dtype)
    out = mta.norm_and_gate(out)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register the attention function and its mask function under "mta" (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, mta_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
