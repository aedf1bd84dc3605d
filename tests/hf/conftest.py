"""A tiny random Llama built locally and saved with save_pretrained (no model hub): the tests' checkpoint."""

from __future__ import annotations

import pytest
import torch

VOCAB = 61


def tiny_llama(kv_heads: int = 2, layers: int = 3, seed: int = 0):
    """LlamaForCausalLM: 4 query heads of width 8, `kv_heads` key/value heads (grouped-query when < 4)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         rope_theta=10_000.0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture
def llama_dir(tmp_path):
    """The directory of a saved tiny grouped-query Llama (float32 weights)."""
    pytest.importorskip("transformers")
    path = tmp_path / "tiny-llama"
    tiny_llama().save_pretrained(path)
    return path


def save_byte_llama(path):
    """Save a tiny Llama (2 layers) whose 512 ids hold the byte tokenizer's, with a context of 256: for training."""
    model = tiny_llama(kv_heads=2, layers=2)
    model.resize_token_embeddings(512)  # the byte tokenizer's ids fit
    model.config.max_position_embeddings = 256
    model.save_pretrained(path)
    return path


@pytest.fixture
def byte_llama(tmp_path):
    pytest.importorskip("transformers")
    return save_byte_llama(tmp_path / "llama512")


@torch.no_grad()
def randomise_mta_(model, seed: int = 1) -> None:
    """Move every MTA parameter away from its initialisation (so a path that ignored one would show)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".mta." in name:
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
