"""Incremental decoding through the model (`Transformer.forward(tokens, cache)`, the state in
mta_lab/attention/decoding.py) and `generate`: cached logits equal the full forward's at every position.

Every attention preset, with random non-identity kernels / head mixing / norm / gate (so a decoding path that
dropped or misplaced any of them would fail), pad_key both/left/right, kernels larger than the prompt, from an
empty cache and after a prompt, one token or several at a time.
"""

from __future__ import annotations

import time

import pytest
import torch

from mta_lab.attention.presets import load_preset, preset_names
from mta_lab.errors import UsageError
from mta_lab.model import build_model, load_model_preset
from mta_lab.model.generate import generate, sample_next

VOCAB, T = 37, 18


def _spec(preset: str, pad_key: str = "both", **overrides):
    spec = load_preset(preset)
    if spec.kind in ("mta", "talking_heads"):
        def widen(kernel):  # left/right padding allow an even c_k: make it even to cover that case
            return None if kernel is None else (kernel[0], kernel[1] + (pad_key != "both"))

        overrides = {"kq_pre": widen(spec.kq_pre), "kq_post": widen(spec.kq_post), "pad_key": pad_key,
                     "kq_layers": "all", **overrides}
    return load_preset(preset, dropout=0.0, **overrides)


def _cases():
    for name in preset_names():
        spec = load_preset(name)
        for pad_key in ("both", "left", "right") if spec.has_kq_conv else ("both",):
            yield name, pad_key


@torch.no_grad()
def _randomise_(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values for every attention-variant parameter (identity init would hide most mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name in ("kq_pre", "kq_post", "head_pre", "head_post", "norm_weight", "lambda_q1", "lambda_k1",
                     "lambda_q2", "lambda_k2"):
            param = getattr(module, name, None)
            if isinstance(param, torch.nn.Parameter):
                scale = 0.3 if name.startswith("lambda") else 0.6
                noise = torch.randn(param.shape, generator=gen, dtype=torch.float64) * scale
                param.copy_((param.double() + noise).to(param.dtype))
        gate = getattr(module, "gate", None)
        if isinstance(gate, torch.nn.Linear):
            gate.bias.copy_(torch.randn(gate.bias.shape, generator=gen, dtype=torch.float64).to(gate.bias.dtype))


def _model(spec, dtype=torch.float64, n_layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = load_model_preset("tiny", n_layers=n_layers, n_heads=4, dim=32, ffn_hidden=64, vocab_size=VOCAB,
                               max_seq_len=64)
    model = build_model(config, spec).to(dtype).eval()
    _randomise_(model, seed)
    return model


def _tokens(batch: int = 2, length: int = T, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _cached_logits(model, tokens, prompt_len: int, chunk: int = 1, capacity: int | None = None) -> torch.Tensor:
    """Logits of every position: a prompt of the first `prompt_len` tokens into an empty cache (0: none; the first
    chunk then fills the cache), then `chunk` tokens per step; with a capacity, into a static cache of that size."""
    cache, parts = model.new_cache(capacity), []
    if prompt_len:
        parts.append(model(tokens[:, :prompt_len], cache))
    for start in range(prompt_len, tokens.shape[1], chunk):
        parts.append(model(tokens[:, start:start + chunk], cache))
        assert cache.length == min(start + chunk, tokens.shape[1])
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize(("preset", "pad_key"), list(_cases()))
@pytest.mark.parametrize("prompt_len", [0, 1, 5])
def test_cached_decoding_equals_full_forward_float64(preset, pad_key, prompt_len):
    model = _model(_spec(preset, pad_key))
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
    cached = _cached_logits(model, tokens, prompt_len)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("preset", "pad_key"), list(_cases()))
@pytest.mark.parametrize(("prompt_len", "chunk"), [(0, 1), (5, 1), (1, 4)])
def test_a_static_cache_decodes_like_the_full_forward_in_fixed_tensors(preset, pad_key, prompt_len, chunk):
    """The static cache (fixed capacity, position on the device: what a CUDA graph replays) gives the full
    forward's logits, and every cached tensor keeps its shape and address from the first new token on."""
    model = _model(_spec(preset, pad_key))
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
        torch.testing.assert_close(_cached_logits(model, tokens, prompt_len, chunk, capacity=T + 3), full,
                                   rtol=0, atol=1e-10)
        cache = model.new_cache(capacity=T)
        model(tokens[:, :max(prompt_len, 1)], cache)
        before = [{k: (t.data_ptr(), t.shape) for k, t in layer.tensors().items()} for layer in cache.layers]
        for start in range(max(prompt_len, 1), T):
            model(tokens[:, start:start + 1], cache)
        assert [{k: (t.data_ptr(), t.shape) for k, t in layer.tensors().items()} for layer in cache.layers] == before
        assert cache.length == T and int(cache.offset) == T
        with pytest.raises(ValueError, match="exceed the static cache's capacity of 18"):
            model(tokens[:, :1], cache)


def test_a_static_cache_is_refused_beyond_max_seq_len():
    model = _model(_spec("transformer"))
    with pytest.raises(ValueError, match="capacity=65: must be in 1..model.max_seq_len=64"):
        model.new_cache(capacity=65)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["transformer", "mta", "talking_heads", "diff"])
def test_cuda_graph_decoding_equals_eager_decoding(preset):
    """generate(graph=True): a static cache and one captured step replayed per token; same tokens as eager
    decoding with the growing cache (float32: greedy choices are well separated at random init)."""
    model = _model(_spec(preset, "both"), dtype=torch.float32).cuda()
    prompt = _tokens(batch=3, length=7).cuda()
    graphed = generate(model, prompt, 30, temperature=0.0, graph=True)
    eager = generate(model, prompt, 30, temperature=0.0, graph=False)
    assert torch.equal(graphed.tokens, eager.tokens)
    recomputed = generate(model, prompt, 30, temperature=0.0, use_cache=False)
    assert torch.equal(graphed.tokens, recomputed.tokens)
    chunked = generate(model, prompt, 30, temperature=0.0, graph=True, prefill_chunk=3)  # static cache, 3 + 3 + 1
    assert torch.equal(chunked.tokens, eager.tokens)


@pytest.mark.parametrize("preset", ["mta", "t5_kqpre_headpost", "talking_heads", "diff", "transformer"])
def test_a_chunked_prefill_samples_what_a_whole_one_does(preset):
    """prefill_chunk=N: the prompt's first N tokens fill the cache, the rest extend it N at a time; float64, so
    greedy choices are the same exactly when the chunks' logits are."""
    model = _model(_spec(preset, "both"))
    prompt = _tokens(batch=2, length=11)
    whole = generate(model, prompt, 6, temperature=0.0, graph=False)
    for chunk in (1, 4, 11, 50):
        started = time.perf_counter()
        chunked = generate(model, prompt, 6, temperature=0.0, graph=False, prefill_chunk=chunk)
        wall = time.perf_counter() - started
        assert torch.equal(chunked.tokens, whole.tokens)
        assert 0 < chunked.prefill_s and 0 < chunked.decode_s and chunked.prefill_s + chunked.decode_s <= wall


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_prefill_chunk_is_refused(bad):
    model = _model(_spec("mta", "both"))
    with pytest.raises(UsageError, match="prefill_chunk"):
        generate(model, _tokens(batch=1, length=5), 2, prefill_chunk=bad)


@pytest.mark.parametrize(("preset", "pad_key"), [(p, k) for p, k in _cases() if p in ("mta", "talking_heads", "diff",
                                                                                          "transformer", "toy_mta_n8")])
def test_cached_decoding_equals_full_forward_float32(preset, pad_key):
    model = _model(_spec(preset, pad_key), dtype=torch.float32)
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
    for prompt_len in (0, 4):
        torch.testing.assert_close(_cached_logits(model, tokens, prompt_len), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
@pytest.mark.parametrize("prompt_len", [0, 1, 2, 3])
def test_kernels_larger_than_the_prompt(pad_key, prompt_len):
    """c_q and c_k far larger than the prompt (and, for c_q, than the sequence): the windows read zero padding."""
    c_k = 21 if pad_key == "both" else 20
    spec = _spec("mta", pad_key, kq_pre=(9, c_k), kq_post=(7, c_k - 4 if pad_key == "both" else 17))
    model = _model(spec)
    tokens = _tokens(length=8)
    with torch.no_grad():
        full = model(tokens)
    torch.testing.assert_close(_cached_logits(model, tokens, prompt_len), full, rtol=0, atol=1e-10)


@pytest.mark.parametrize("preset", ["mta", "t5_kq_8x13", "talking_heads", "diff", "transformer"])
@pytest.mark.parametrize(("prompt_len", "chunk"), [(0, 3), (2, 4), (5, 13)])
def test_several_new_tokens_per_step(preset, prompt_len, chunk):
    model = _model(_spec(preset, "both"))
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
    torch.testing.assert_close(_cached_logits(model, tokens, prompt_len, chunk), full, rtol=0, atol=1e-10)


def test_the_paper_layer_selection_and_a_deeper_model():
    """kq convolutions only on layer 2 (every:4:2) of a 3-layer model: mixed layer kinds in one cache."""
    model = _model(load_preset("mta", dropout=0.0), n_layers=3)
    assert model.layers[2].attn.kq_pre is not None and model.layers[0].attn.kq_pre is None
    tokens = _tokens()
    with torch.no_grad():
        full = model(tokens)
    for prompt_len in (0, 7):
        torch.testing.assert_close(_cached_logits(model, tokens, prompt_len), full, rtol=0, atol=1e-10)


@torch.no_grad()
def test_a_corrupted_cache_is_detected():
    """Negative control: the comparison above can fail. Dropping the cached query / probability windows changes
    the logits (they are really read), and so does a wrong pad_key."""
    spec = _spec("mta", "both")
    model = _model(spec)
    tokens = _tokens()
    full = model(tokens)
    for field in ("queries", "probs"):
        cache = model.new_cache()
        model(tokens[:, :9], cache)
        for layer in cache.layers:
            setattr(layer, field, torch.zeros_like(getattr(layer, field)))
        wrong = torch.cat([model(tokens[:, i:i + 1], cache) for i in range(9, T)], dim=1)
        assert (wrong - full[:, 9:]).abs().max() > 1e-3, field
    shifted = _model(_spec("mta", "left", kq_pre=(6, 11), kq_post=(6, 11)))
    assert (shifted(tokens) - full).abs().max() > 1e-3


@pytest.mark.parametrize("preset", ["mta", "t5_kqpre_headpost", "transformer", "diff"])
@torch.no_grad()
def test_cache_grows_linearly_with_fixed_query_and_probability_windows(preset):
    spec = _spec(preset, "both")
    model = _model(spec)
    tokens = _tokens(batch=1, length=40)
    cache = model.new_cache()
    sizes = []
    for i in range(tokens.shape[1]):
        model(tokens[:, i:i + 1], cache)
        sizes.append(cache.numel())
    steps = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    assert len(set(steps[5:])) == 1 and steps[-1] > 0  # a constant number of new elements per token
    for block, layer in zip(model.layers, cache.layers, strict=True):
        attn = block.attn
        h = attn.op_heads
        assert layer.keys.shape[:3] == (1, h, 40) and layer.values.shape[:3] == (1, h, 40)
        kq_pre, kq_post = getattr(attn, "kq_pre", None), getattr(attn, "kq_post", None)
        assert (layer.queries is None) == (kq_pre is None)
        assert (layer.probs is None) == (kq_post is None)
        if kq_pre is not None:
            assert layer.queries.shape == (1, h, kq_pre.shape[1] - 1, attn.head_dim)
        if kq_post is not None:
            assert layer.probs.shape == (1, h, kq_post.shape[1] - 1, 40)
    # A cache filled from the whole prompt holds the same state as one built token by token.
    filled = model.new_cache()
    model(tokens, filled)
    for a, b in zip(filled.layers, cache.layers, strict=True):
        assert a.tensors().keys() == b.tensors().keys()
        for name, tensor in a.tensors().items():
            torch.testing.assert_close(tensor, b.tensors()[name], rtol=0, atol=1e-10)


@torch.no_grad()
def test_decoding_past_max_seq_len_and_a_cache_that_does_not_fit_are_refused():
    model = _model(_spec("mta", "both"))
    cache = model.new_cache()
    model(_tokens(length=64), cache)
    with pytest.raises(ValueError, match="sequence length 65 exceeds model.max_seq_len=64"):
        model(_tokens(length=1), cache)
    assert cache.length == 64  # the refused call left the cache as it was
    with pytest.raises(ValueError, match="sequence length 66 exceeds model.max_seq_len=64"):
        model(_tokens(length=2), cache)
    half = model.new_cache()
    model(_tokens(batch=2, length=5), half)
    with pytest.raises(ValueError, match="the cache holds 2 sequences but the tokens have 3 rows"):
        model(_tokens(batch=3, length=1), half)
    deeper = _model(_spec("mta", "both"), n_layers=3)
    with pytest.raises(ValueError, match="the cache has 2 layers but the model 3: make it with this model's"):
        deeper(_tokens(length=1), model.new_cache())


@pytest.mark.parametrize("preset", ["mta", "diff", "transformer"])
def test_generate_with_the_cache_equals_full_recomputation(preset):
    model = _model(_spec(preset, "both"), dtype=torch.float64)
    prompt = _tokens(batch=2, length=5)
    greedy = generate(model, prompt, 20, temperature=0.0)
    assert greedy.tokens.shape == (2, 25) and greedy.new_tokens == 20
    assert torch.equal(greedy.tokens[:, :5], prompt)
    assert torch.equal(greedy.tokens, generate(model, prompt, 20, temperature=0.0, use_cache=False).tokens)
    sampled = [generate(model, prompt, 20, temperature=1.5, top_k=5, generator=torch.Generator().manual_seed(3),
                        use_cache=cache).tokens for cache in (True, False)]
    assert torch.equal(sampled[0], sampled[1])
    assert greedy.tokens_per_s > 0 and greedy.cache_bytes > 0


def test_generate_stops_at_eos_and_checks_its_inputs():
    model = _model(_spec("transformer"), dtype=torch.float64)
    prompt = _tokens(batch=1, length=3)
    first = int(generate(model, prompt, 1, temperature=0.0).tokens[0, -1])
    stopped = generate(model, prompt, 10, temperature=0.0, eos_id=first)
    assert stopped.new_tokens == 1 and stopped.tokens.shape == (1, 4)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, prompt, 62)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, prompt[:, :0], 3)
    with pytest.raises(ValueError, match="graph=true needs a CUDA model"):
        generate(model, prompt, 3, graph=True)


def test_sample_next_top_k_and_greedy():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    assert sample_next(logits, temperature=0.0).tolist() == [1]
    gen = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, temperature=10.0, top_k=2, generator=gen)) for _ in range(200)}
    assert draws == {1, 3}
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=-1.0)
