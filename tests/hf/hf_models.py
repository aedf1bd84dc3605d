"""Tiny random Llamas built locally and saved with save_pretrained (no model hub): the hf tests' checkpoints.

A module of its own (not conftest.py) so that `from hf_models import ...` names this file whichever other
conftest module pytest imported first."""

from __future__ import annotations

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


def save_byte_llama(path):
    """Save a tiny Llama (2 layers) whose 512 ids hold the byte tokenizer's, with a context of 256: for training."""
    model = tiny_llama(kv_heads=2, layers=2)
    model.resize_token_embeddings(512)  # the byte tokenizer's ids fit
    model.config.max_position_embeddings = 256
    model.save_pretrained(path)
    return path


@torch.no_grad()
def randomise_mta_(model, seed: int = 1) -> None:
    """Move every MTA parameter away from its initialisation (so a path that ignored one would show)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if ".mta." in name:
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
