"""DataBundle: what the trainer sees of the data, whatever its kind.

Batches are dicts of CPU tensors: ``tokens`` (B, seq_len + 1) int64 and ``loss_mask`` (B, seq_len) bool, where
``loss_mask[b, t]`` says whether the target ``tokens[b, t + 1]`` counts. The model reads ``tokens[:, :-1]``.
`train_batch` is a pure function of its arguments (see `sampling.py`), so a run resumes exactly from any step
and ranks read disjoint samples within a step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from mta_lab.data.tokenizers import Tokenizer

Batch = dict[str, torch.Tensor]


class DataBundle(ABC):
    tokenizer: Tokenizer
    seq_len: int  # model input length (targets are shifted by one)
    fingerprint: str  # stable hash of (data config, data content, tokenizer): the MLflow tag mta.data_fingerprint
    info: dict[str, Any]  # sizes per domain/split, for logging

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> Batch:
        """This rank's training batch at `step`: a pure function of (seed, step, batch_size, rank, world_size)."""

    @abstractmethod
    def val_batches(self, batch_size: int) -> dict[str, list[Batch]]:
        """Fixed validation batches per domain (the toy task: {"toy": the test set})."""


def check_batch_args(step: int, batch_size: int, rank: int, world_size: int) -> None:
    if step < 0 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"train_batch(step={step}, batch_size={batch_size}, rank={rank}, world_size={world_size}): "
            "need step >= 0, batch_size >= 1, world_size >= 1 and 0 <= rank < world_size"
        )


def as_batch(tokens: Any, loss_mask: Any) -> Batch:
    return {
        "tokens": torch.as_tensor(tokens, dtype=torch.long),
        "loss_mask": torch.as_tensor(loss_mask, dtype=torch.bool),
    }
