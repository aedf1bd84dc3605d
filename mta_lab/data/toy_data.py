"""The toy task as a DataBundle: training samples drawn in a seeded epoch-wise order, the test set as validation.

Training sample indices come from an epoch-wise permutation of ``range(toy_train_samples)`` keyed by the
training ``seed`` (`sampling.epoch_items`): the seed changes the data order, ``data_seed`` the samples themselves.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from mta_lab.data.bundle import Batch, DataBundle, as_batch, check_batch_args
from mta_lab.data.config import DataConfig
from mta_lab.data.fingerprint import stable_hash
from mta_lab.data.sampling import epoch_items, key_of, step_positions
from mta_lab.data.toy import TEST_BUCKETS, ToyTask

TOY_VERSION = "1"


class ToyData(DataBundle):
    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.task: ToyTask = config.toy_task()
        self.tokenizer = self.task.tokenizer
        self.seq_len = self.task.seq_len
        c = config
        self.fingerprint = stable_hash(
            "toy", TOY_VERSION, str(TEST_BUCKETS), self.tokenizer.fingerprint,
            repr((c.toy_n, c.toy_l, c.toy_variant, self.task.num_blocks, c.toy_train_samples, c.toy_test_samples,
                  c.data_seed)),
        )
        self.info = {
            "kind": "toy", "n": c.toy_n, "l": c.toy_l, "variant": c.toy_variant, "blocks": self.task.num_blocks,
            "input_chars": self.task.input_len, "seq_len": self.seq_len, "vocab_size": self.tokenizer.vocab_size,
            "train_samples": c.toy_train_samples, "test_samples": c.toy_test_samples,
        }

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> Batch:
        check_batch_args(step, batch_size, rank, world_size)
        positions = step_positions(step, batch_size, rank, world_size)
        indices = epoch_items(positions, self.config.toy_train_samples, batch_size * world_size, key_of(seed, "toy"))
        return as_batch(*self.task.batch(self.config.data_seed, "train", indices))

    @cached_property
    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """tokens (toy_test_samples, seq_len + 1) and loss_mask (toy_test_samples, seq_len)."""
        return self.task.batch(self.config.data_seed, "test", range(self.config.toy_test_samples))

    def val_batches(self, batch_size: int) -> dict[str, list[Batch]]:
        tokens, mask = self.test_set
        return {"toy": [as_batch(tokens[i : i + batch_size], mask[i : i + batch_size])
                        for i in range(0, len(tokens), batch_size)]}
