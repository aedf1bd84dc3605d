"""The decoder (mta_lab/model/transformer.py): shapes, tied embeddings, causality, seeding, initialisation."""

from __future__ import annotations

import pytest
import torch

from mta_lab.attention.presets import load_preset
from mta_lab.model import build_model, load_model_preset


def test_forward_shape_tied_embeddings_and_causality():
    torch.manual_seed(0)
    config = load_model_preset("tiny")
    model = build_model(config, load_preset("mta", kq_layers="all")).double()
    tokens = torch.randint(0, config.vocab_size, (2, 20))
    logits = model(tokens)
    assert logits.shape == (2, 20, config.vocab_size)
    assert "tok_embeddings.weight" in dict(model.named_parameters())
    assert not any("output" in name or "lm_head" in name for name, _ in model.named_parameters())
    changed = tokens.clone()
    changed[:, 12] = (changed[:, 12] + 1) % config.vocab_size
    other = model(changed)
    torch.testing.assert_close(other[:, :12], logits[:, :12], rtol=0, atol=1e-12)
    assert (other[:, 12:] - logits[:, 12:]).abs().max() > 1e-6


def test_same_seed_same_model_and_output():
    def run():
        torch.manual_seed(7)
        model = build_model(load_model_preset("tiny"), load_preset("talking_heads"))
        return model(torch.arange(16).view(1, 16))

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_init_keeps_the_attention_variant_initialisation():
    model = build_model(load_model_preset("tiny"), load_preset("mta", kq_layers="all"))
    for block in model.layers:
        assert torch.equal(block.attn.head_pre, torch.eye(4))
        assert block.attn.kq_pre[:, 5, 5].eq(1).all() and block.attn.kq_pre.sum() == 4
        assert block.attn.gate.bias.eq(0).all()


def test_sequence_longer_than_max_seq_len_is_a_clear_error():
    model = build_model(load_model_preset("tiny", max_seq_len=8), load_preset("transformer"))
    with pytest.raises(ValueError, match="exceeds model.max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
