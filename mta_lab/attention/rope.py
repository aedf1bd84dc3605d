"""Rotary position embeddings (half-split layout, as in LLaMA/HF checkpoints)."""

from __future__ import annotations

import torch
from torch import Tensor


def rope_tables(
    seq_len: int, head_dim: int, theta: float, device: torch.device | str | None = None, offset: int | Tensor = 0
) -> tuple[Tensor, Tensor]:
    """cos, sin tables of shape (seq_len, head_dim) for positions offset .. offset + seq_len - 1 (float32); offset
    an int or a (1,) integer tensor on `device` (a static decoding cache's position)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    positions = torch.arange(seq_len, dtype=torch.float32, device=device) + offset  # exact below 2^24
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, head_dim) by the tables (T, head_dim); computed in float32, returned in x's dtype."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos.to(xf.dtype) + rotated * sin.to(xf.dtype)).to(x.dtype)
