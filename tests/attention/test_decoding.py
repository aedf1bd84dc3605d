"""The decoding cache at the layer level (mta_lab/attention/decoding.py): an attention layer's
`forward(x, rope, cache)` over a prompt and then new tokens equals its full forward over the whole sequence.

Only the attention package is used here (no model); tests/model/test_generate.py checks the same through
the whole decoder and `generate`.
"""

from __future__ import annotations

import pytest
import torch

from mta_lab.attention import DecodeCache, LayerCache, build_attention, load_preset, preset_names
from mta_lab.attention.rope import rope_tables

F64 = torch.float64
DIM, HEADS, N_LAYERS, T = 32, 4, 4, 15


@torch.no_grad()
def _layer(spec, layer_idx: int = 1, seed: int = 0):
    """A float64 layer in eval mode with random projections and random variant parameters."""
    torch.manual_seed(seed)
    layer = build_attention(spec, dim=DIM, n_heads=HEADS, layer_idx=layer_idx, n_layers=N_LAYERS).to(F64).eval()
    for name, param in layer.named_parameters():
        scale = 0.3 if name.startswith("lambda") else 0.6
        param.add_(torch.randn(param.shape, dtype=F64) * scale)
    return layer


def _x(batch: int = 2, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, length, DIM, generator=torch.Generator().manual_seed(seed), dtype=F64)


@torch.no_grad()
def _cached(layer, x, prompt_len: int, chunk: int = 1, cache: LayerCache | None = None) -> torch.Tensor:
    """Outputs of every position: the first prompt_len rows into an empty cache (0: the first chunk fills it),
    then `chunk` rows per call."""
    cache = cache if cache is not None else LayerCache()
    parts = [layer(x[:, :prompt_len], cache=cache)] if prompt_len else []
    for start in range(prompt_len, x.shape[1], chunk):
        parts.append(layer(x[:, start:start + chunk], cache=cache))
        assert cache.length == min(start + chunk, x.shape[1])
    return torch.cat(parts, dim=1)


def _specs():
    for name in preset_names():
        base = load_preset(name)
        for pad_key in ("both", "left", "right") if base.has_kq_conv else ("both",):
            yield pytest.param(name, pad_key, id=f"{name}-{pad_key}")


@pytest.mark.parametrize(("preset", "pad_key"), list(_specs()))
@pytest.mark.parametrize(("prompt_len", "chunk"), [(0, 1), (6, 1), (3, 5)])
def test_layer_with_a_cache_equals_its_full_forward(preset, pad_key, prompt_len, chunk):
    overrides = {"kq_layers": "all", "pad_key": pad_key} if load_preset(preset).has_kq_conv else {}
    layer = _layer(load_preset(preset, dropout=0.0, **overrides))
    x = _x()
    with torch.no_grad():
        full = layer(x)
    torch.testing.assert_close(_cached(layer, x, prompt_len, chunk), full, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("kq_pre", "kq_post"), [((1, 3), (1, 3)), ((1, 5), None), (None, (1, 3)),
                                                 ((4, 3), (1, 5)), ((1, 3), (3, 5))])
def test_kernels_of_one_query_row(kq_pre, kq_post):
    """c_q = 1 needs no query or probability window (decoding with a (1, c_k) post-softmax kernel used to fail)."""
    layer = _layer(load_preset("mta", dropout=0.0, kq_pre=kq_pre, kq_post=kq_post, kq_layers="all"))
    x = _x()
    with torch.no_grad():
        full = layer(x)
    cache = LayerCache()
    torch.testing.assert_close(_cached(layer, x, 4, cache=cache), full, rtol=0, atol=1e-10)
    assert (cache.queries is None) == (kq_pre is None or kq_pre[0] == 1)
    assert (cache.probs is None) == (kq_post is None or kq_post[0] == 1)


@torch.no_grad()
def test_rope_tables_given_or_made_from_the_cache_length():
    """Without tables the layer rotates new rows at their absolute positions cache.length ..; given tables win."""
    layer = _layer(load_preset("mta", dropout=0.0, kq_layers="all"))
    x = _x()
    made, given = LayerCache(), LayerCache()
    layer(x[:, :9], cache=made)
    layer(x[:, :9], rope_tables(9, layer.rope_dim, layer.rope_theta), cache=given)
    new = layer(x[:, 9:12], cache=made)
    torch.testing.assert_close(layer(x[:, 9:12], rope_tables(3, layer.rope_dim, layer.rope_theta, offset=9), given),
                               new, rtol=0, atol=0)
    wrong = layer(x[:, 12:13], rope_tables(1, layer.rope_dim, layer.rope_theta, offset=0), LayerCache(
        **{name: t.clone() for name, t in made.tensors().items()}))
    assert (wrong - layer(x[:, 12:13], cache=made)).abs().max() > 1e-3  # position 0's tables are not position 12's


@torch.no_grad()
def test_a_filled_cache_is_read_not_recomputed():
    """Negative control: the new rows' outputs come from the cached keys and values, not from x alone."""
    layer = _layer(load_preset("transformer", dropout=0.0))
    x = _x()
    cache = LayerCache()
    layer(x[:, :8], cache=cache)
    right = layer(x[:, 8:9], cache=LayerCache(**{name: t.clone() for name, t in cache.tensors().items()}))
    cache.values = torch.zeros_like(cache.values)
    assert (layer(x[:, 8:9], cache=cache) - right).abs().max() > 1e-3


@torch.no_grad()
def test_cache_sizes():
    empty = DecodeCache.empty(3)
    assert empty.length == 0 and empty.batch_size is None and empty.numel() == 0 and len(empty.layers) == 3
    spec = load_preset("mta", dropout=0.0, kq_layers="all")  # kq_pre (6, 11), kq_post (6, 11)
    layer = _layer(spec)
    cache = LayerCache()
    assert cache.length == 0 and cache.tensors() == {}
    layer(_x(batch=3, length=10), cache=cache)
    head_dim = DIM // HEADS
    assert cache.keys.shape == cache.values.shape == (3, HEADS, 10, head_dim)
    assert cache.queries.shape == (3, HEADS, 5, head_dim) and cache.probs.shape == (3, HEADS, 5, 10)
    assert cache.numel() == 2 * 3 * HEADS * 10 * head_dim + 3 * HEADS * 5 * (head_dim + 10)
    assert cache.nbytes() == 8 * cache.numel()  # float64
    model_cache = DecodeCache([cache, LayerCache()])
    assert model_cache.length == 10 and model_cache.batch_size == 3
