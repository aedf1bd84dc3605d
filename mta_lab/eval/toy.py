"""Toy-task metric (mta-spec.md §5): the sample error rate under teacher forcing.

A test sample is wrong when the argmax prediction differs from the target at ANY answer position or at the EOS
(the positions `loss_mask` marks), the model reading the true prefix (teacher forcing). The paper reports the
fraction of wrong samples over the 1K test samples. Plain PyTorch: any callable tokens (B, T) -> logits (B, T, V).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


def toy_error_rate(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> tuple[int, int]:
    """(n_errors, n_samples) for one batch.

    logits (B, T, V): the model's output on tokens[:, :-1]; targets (B, T) = tokens[:, 1:]; loss_mask (B, T) bool.
    Samples with no masked target (padding rows) are not counted.
    """
    if logits.shape[:2] != targets.shape or targets.shape != loss_mask.shape:
        raise ValueError(
            f"toy_error_rate: logits {tuple(logits.shape)} must be (B, T, V) for targets and loss_mask (B, T); "
            f"got targets {tuple(targets.shape)}, loss_mask {tuple(loss_mask.shape)}"
        )
    mask = loss_mask.bool()
    wrong = ((logits.argmax(dim=-1) != targets) & mask).any(dim=1)
    counted = mask.any(dim=1)
    return int((wrong & counted).sum()), int(counted.sum())


@dataclass(frozen=True)
class ToyErrors:
    errors: int
    samples: int

    @property
    def rate(self) -> float:
        return self.errors / self.samples if self.samples else float("nan")


def evaluate_toy(
    model: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    device: torch.device | str | None = None,
) -> ToyErrors:
    """Sample errors of `model` over batches {"tokens": (B, T + 1), "loss_mask": (B, T)}, e.g. a toy bundle's
    ``val_batches(64)["toy"]``. An nn.Module is evaluated in eval mode (no dropout) and put back as it was."""
    if device is None:
        params = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
        device = params.device if params is not None else "cpu"
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    errors = samples = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                tokens, mask = batch["tokens"].to(device), batch["loss_mask"].to(device)
                e, n = toy_error_rate(model(tokens[:, :-1]), tokens[:, 1:], mask)
                errors, samples = errors + e, samples + n
    finally:
        if was_training:
            model.train()
    return ToyErrors(errors, samples)
