"""Greedy `generate` of an HF Llama with MTA equals the argmax of full recomputation, token by token.

A kq convolution over c_q > 1 query rows needs past queries that HF's KV cache does not keep: `attach` turns the
cache off (`generation_config.use_cache=False`, full recomputation per token) and a cached call is refused with a
message. Layers whose kernels read one query row (Talking heads, key-axis-only kq convolutions) decode with the KV
cache, row by row, exactly."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import VOCAB, randomise_mta_  # noqa: E402

from mta_lab.attention import AttentionSpec, load_preset  # noqa: E402
from mta_lab.hf import HFError, load_model  # noqa: E402

NEW = 6


@torch.no_grad()
def _recomputed(model, prompt: torch.Tensor) -> torch.Tensor:
    tokens = prompt
    for _ in range(NEW):
        nxt = model(tokens).logits[:, -1].argmax(-1, keepdim=True)
        tokens = torch.cat((tokens, nxt), dim=1)
    return tokens


def _model(llama_dir, spec):
    model = load_model(llama_dir, spec, dtype=torch.float64).eval()
    randomise_mta_(model)
    return model


PROMPT = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(5))


def test_a_query_axis_kq_conv_generates_by_recomputation(llama_dir):
    model = _model(llama_dir, load_preset("mta", kq_layers="all"))
    assert model.generation_config.use_cache is False
    out = model.generate(PROMPT, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(out, _recomputed(model, PROMPT))
    with pytest.raises(HFError, match="use_cache=False"):
        model.generate(PROMPT, max_new_tokens=2, do_sample=False, use_cache=True, pad_token_id=0)


@pytest.mark.parametrize("spec", [
    load_preset("talking_heads"),
    AttentionSpec(kind="mta", kq_pre=(1, 3), kq_post=(1, 2), pad_key="left", head_pre=True, group_norm="rms",
                  gate="scalar"),
], ids=["talking_heads", "kq_one_query_row"])
def test_one_query_row_kernels_decode_with_the_kv_cache(llama_dir, spec):
    model = _model(llama_dir, spec)
    assert model.generation_config.use_cache is not False
    out = model.generate(PROMPT, max_new_tokens=NEW, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(out, _recomputed(model, PROMPT))
    # The cached logits themselves equal the full forward's (not only their argmax).
    with torch.no_grad():
        full = model(out).logits
        past = model(out[:, :-2], use_cache=True).past_key_values
        step = model(out[:, -2:], cache=past, use_cache=True).logits
    assert torch.allclose(step, full[:, -2:], rtol=0, atol=1e-10)
