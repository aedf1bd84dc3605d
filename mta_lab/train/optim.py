"""AdamW with decay / no-decay parameter groups, and the learning-rate schedules of spec §4."""

from __future__ import annotations

import math

import torch
from torch import nn

from mta_lab.train.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Matrices (projections, MLP) decay; vectors, embeddings, norms and the MTA kernels/mixing do not.

    Embeddings are tied to the output head; like LLaMA-style recipes we keep them out of decay, as we keep
    the small MTA mixing tensors (identity-initialised operators, not projections).
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_projection = param.dim() == 2 and "tok_embeddings" not in name and "head_pre" not in name
        (decay if is_projection else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig, *, fused: bool = False) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=tuple(config.betas), eps=config.eps,
        fused=fused or None,
    )


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Multiplier of config.lr at optimizer step `step` (0-based): linear warmup, then the schedule."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = config.min_lr_ratio
    if config.schedule == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))  # cosine


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, config: OptimConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
