"""One readable LLaMA-style decoder whose attention comes from an AttentionSpec.

Pre-norm blocks (RMSNorm, attention, RMSNorm, SwiGLU MLP), RoPE, no biases, tied input/output embeddings.
Each layer's attention is `build_attention(spec, layer_idx=...)`: kq convolutions only on the layers the
spec selects, head mixing / group norm / gate on all of them. One forward serves training and decoding: it
takes a cache it does not own (`new_cache()`; `mta_lab/attention/decoding.py` says what each layer keeps).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mta_lab.attention.decoding import DecodeCache, LayerCache
from mta_lab.attention.layers import AttentionBase, build_attention
from mta_lab.attention.rope import rope_tables
from mta_lab.attention.spec import AttentionSpec
from mta_lab.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden, bias=False)  # up
        self.w2 = nn.Linear(hidden, dim, bias=False)  # down

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, spec: AttentionSpec, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn: AttentionBase = build_attention(
            spec, dim=config.dim, n_heads=config.n_heads, layer_idx=layer_idx, n_layers=config.n_layers,
            rope_theta=config.rope_theta,
        )
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.hidden)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], cache: LayerCache | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    graph_decoding = True  # new_cache(capacity) is static: `generate` can capture its decoding step as a CUDA graph

    def __init__(self, config: ModelConfig, spec: AttentionSpec) -> None:
        super().__init__()
        spec.check_model(n_heads=config.n_heads, n_layers=config.n_layers)
        self.config, self.spec = config, spec
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, spec, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) for embeddings and projections, residual outputs scaled by 1/sqrt(2L)
        (GPT-2); the attention variant's own parameters keep the spec's initialisation."""
        std = self.config.init_std
        nn.init.normal_(self.tok_embeddings.weight, std=std)
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for block in self.layers:
            for linear in (block.attn.wq, block.attn.wk, block.attn.wv, block.mlp.w1, block.mlp.w3):
                nn.init.normal_(linear.weight, std=std)
            for linear in (block.attn.wo, block.mlp.w2):
                nn.init.normal_(linear.weight, std=out_std)
            for module in (block.attn_norm, block.mlp_norm, block.attn):
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        self.norm.reset_parameters()

    @property
    def rope_dim(self) -> int:
        return self.layers[0].attn.rope_dim

    def new_cache(self, capacity: int | None = None) -> DecodeCache:
        """An empty decoding cache for `forward(tokens, cache)`: one `LayerCache` per layer; with a capacity
        (tokens, at most max_seq_len), static ones of that size, which a CUDA graph can capture a step over."""
        if capacity is not None and not 0 < capacity <= self.config.max_seq_len:
            raise ValueError(f"capacity={capacity}: must be in 1..model.max_seq_len={self.config.max_seq_len}")
        return DecodeCache.empty(len(self.layers), capacity)

    def forward(self, tokens: Tensor, cache: DecodeCache | None = None) -> Tensor:
        """tokens (B, n) -> logits (B, n, vocab).

        cache None: the causal forward over positions 0 .. n - 1 (training). With a cache holding T tokens, the
        tokens are positions T .. T + n - 1 (RoPE at those absolute positions) and the cache is extended: an empty
        cache gets the full forward over the prompt, which also fills it; a filled one attends the new tokens to
        the cached ones, O(T) attention work per new token, not O(T²). Cached logits equal the full forward's
        over the whole sequence at those positions (eval mode: decoding applies no dropout).
        """
        pos = cache.length if cache is not None else 0
        n = tokens.shape[1]
        if pos + n > self.config.max_seq_len:
            raise ValueError(f"sequence length {pos + n} exceeds model.max_seq_len={self.config.max_seq_len}")
        layer_caches = [None] * len(self.layers) if cache is None else self._layer_caches(cache, tokens.shape[0])
        offset = cache.offset if cache is not None else 0  # a static cache's is a device tensor (CUDA graphs)
        rope = rope_tables(n, self.rope_dim, self.config.rope_theta, tokens.device, offset=offset)
        x = self.tok_embeddings(tokens)
        for layer, layer_cache in zip(self.layers, layer_caches, strict=True):
            x = layer(x, rope, layer_cache)
        return F.linear(self.norm(x), self.tok_embeddings.weight)  # tied output embedding

    def _layer_caches(self, cache: DecodeCache, batch: int) -> list[LayerCache]:
        if len(cache.layers) != len(self.layers):
            raise ValueError(f"the cache has {len(cache.layers)} layers but the model {len(self.layers)}: "
                             "make it with this model's new_cache()")
        if cache.batch_size not in (None, batch):
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the tokens have {batch} rows: "
                             "continue each batch of sequences with its own cache (new_cache())")
        return cache.layers


def build_model(config: ModelConfig, spec: AttentionSpec) -> Transformer:
    return Transformer(config, spec)
