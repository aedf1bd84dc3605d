"""Lightning data plumbing over a DataBundle: step-indexed training batches, fixed validation batches.

Training batch s is a pure function of (seed, s, rank), so a resumed run (which restarts the iterator at
the restored global step) sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset


class StepBatches(IterableDataset):
    def __init__(self, bundle, *, start: int, stop: int, batch_size: int, seed: int, rank: int, world_size: int):
        self.bundle, self.start, self.stop = bundle, start, stop
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.bundle.train_batch(step, self.batch_size, seed=self.seed, rank=self.rank,
                                          world_size=self.world_size)

    # No __len__ on purpose: Lightning would take it for an epoch's length and, after a resume, end the "epoch"
    # early and restart the iterator (repeating batches). Runs are bounded by max_steps instead.


class BatchList(Dataset):
    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        return self.batches[i]


class LMDataModule(L.LightningDataModule):
    def __init__(self, bundle, *, batch_size: int, val_batch_size: int, seed: int, total_steps: int,
                 val_batches: int | None) -> None:
        super().__init__()
        self.bundle, self.batch_size, self.seed, self.total_steps = bundle, batch_size, seed, total_steps
        self.val = {d: batches[:val_batches] if val_batches else batches
                    for d, batches in bundle.val_batches(val_batch_size).items()}

    @property
    def val_domains(self) -> tuple[str, ...]:
        return tuple(self.val)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        dataset = StepBatches(self.bundle, start=trainer.global_step, stop=self.total_steps,
                              batch_size=self.batch_size, seed=self.seed, rank=trainer.global_rank,
                              world_size=trainer.world_size)
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> list[DataLoader]:
        # Each rank evaluates its own share of the fixed batches; the module sums over ranks. Every rank must run
        # the same number of forwards (FSDP's forward is a collective), so short shares are padded with a batch
        # whose loss mask is empty: it adds nothing to the sums.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        loaders = []
        for batches in self.val.values():
            share = batches[rank::world]
            share += [_masked_out(batches[0])] * (-(-len(batches) // world) - len(share))
            loaders.append(DataLoader(BatchList(share), batch_size=None))
        return loaders


def _masked_out(batch: dict) -> dict:
    return {**batch, "loss_mask": torch.zeros_like(batch["loss_mask"])}
