"""Analytic parameter and FLOP accounting, checked against `numel` and a FLOP counter in the tests.

Parameters (spec §4): tied embeddings V·D; per layer 4·D² attention projections, 3·D·F SwiGLU, 2·D norms;
a final D norm; plus the attention variant's extras (`expected_extra_parameters`).

FLOPs count matrix multiplications and convolutions (2 per multiply-add), with the attention-score work
counted over the full T×T square as the dense kernels compute it; element-wise work (softmax, norms, gates'
sigmoid) is left out. Training FLOPs are 3× the forward (backward = 2× forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mta_lab.attention.layers import expected_extra_parameters
from mta_lab.attention.spec import AttentionSpec
from mta_lab.model.config import ModelConfig


@dataclass(frozen=True)
class ParamBreakdown:
    embeddings: int
    attention: int
    mlp: int
    norms: int
    attention_extras: int

    @property
    def total(self) -> int:
        return self.embeddings + self.attention + self.mlp + self.norms + self.attention_extras


def count_parameters(config: ModelConfig, spec: AttentionSpec) -> ParamBreakdown:
    d, layers = config.dim, config.n_layers
    return ParamBreakdown(
        embeddings=config.vocab_size * d,  # tied: the output head shares it
        attention=layers * 4 * d * d,
        mlp=layers * 3 * d * config.hidden,
        norms=layers * 2 * d + d,
        attention_extras=expected_extra_parameters(spec, dim=d, n_heads=config.n_heads, n_layers=layers),
    )


@dataclass(frozen=True)
class FlopBreakdown:
    """Forward FLOPs per token at a given context length."""

    dense: int  # projections, MLP, output head (2 · matmul parameters)
    attention: int  # scores and weighted values, full T×T
    attention_extras: int  # kq convolutions and head mixing on the T×T maps

    @property
    def forward(self) -> int:
        return self.dense + self.attention + self.attention_extras

    @property
    def train(self) -> int:
        return 3 * self.forward


def flops_per_token(config: ModelConfig, spec: AttentionSpec, seq_len: int) -> FlopBreakdown:
    """Model FLOPs per token as the reference (eager) op computes them, whatever backend a run uses: the
    quantity MFU and the scaling fits compare across runs."""
    d, h, t, layers = config.dim, config.n_heads, seq_len, config.n_layers
    head_dim = d // h
    gate = {"none": 0, "scalar": head_dim, "full": head_dim * head_dim}[spec.gate]
    # Gates are matmuls applied per head: D·gate_width/head_dim multiply-adds per token.
    matmul_params = layers * (4 * d * d + 3 * d * config.hidden + h * gate) + config.vocab_size * d
    dense = 2 * matmul_params

    if spec.kind == "diff":
        # Two attentions per head pair: q·k over width head_dim, weights·v over width 2·head_dim.
        per_layer = 2 * (2 * t * head_dim + 2 * t * 2 * head_dim) * (h // 2)
    else:
        per_layer = 2 * 2 * t * d  # q·kᵀ and A·v
    attention = layers * per_layer

    extras = 0
    for layer in range(layers):
        if spec.uses_kq_conv(layer, layers):
            extras += sum(2 * h * t * math.prod(k) for k in (spec.kq_pre, spec.kq_post) if k)
        if spec.head_pre:
            extras += 2 * h * h * t
        c_h = spec.head_group_size(h)
        if c_h:
            extras += 2 * h * c_h * t
    return FlopBreakdown(dense=dense, attention=attention, attention_extras=extras)
