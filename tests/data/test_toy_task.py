"""The toy task generator (mta-spec.md §5): sizes, sample properties, token layout, splits, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mta_lab.data import DataConfig, DataConfigError, ToyTask, build_data
from mta_lab.data.toy import TEST_BUCKETS, split_of

CASES = [(n, v) for n in (5, 8) for v in ("all", "first", "last")]


@pytest.mark.parametrize(
    ("n", "variant", "blocks", "block_chars", "input_len", "seq_len"),
    [
        (5, "all", 52, 311, 314, 320),
        (5, "first", 52, 311, 314, 316),
        (5, "last", 52, 311, 314, 316),
        (8, "all", 35, 314, 317, 326),
        (8, "first", 35, 314, 317, 319),
        (8, "last", 35, 314, 317, 319),
    ],
)
def test_sizes(n, variant, blocks, block_chars, input_len, seq_len):
    task = ToyTask(n=n, variant=variant)
    assert task.num_blocks == blocks
    assert task.input_len == input_len == block_chars + 1 + 2
    assert task.seq_len == seq_len == task.num_tokens - 1
    text, _ = task.text(task.sample(0, "train", 0))
    assert len(text) == input_len and len(text.split("#")[0]) == block_chars


@pytest.mark.parametrize(("n", "variant"), CASES)
def test_sample_properties(n, variant):
    task = ToyTask(n=n, variant=variant)
    for i in range(25):
        sample = task.sample(7, "train", i)
        text, answer = task.text(sample)
        context, query = text.split("#")
        blocks = context.split(".")
        assert len(blocks) == task.num_blocks and all(len(b) == n for b in blocks)
        assert all(len(set(b)) == n and b.isalpha() and b.islower() for b in blocks)  # distinct letters a-z
        assert len(set(blocks)) == len(blocks)  # all blocks unique
        assert len(query) == 2 and len(set(query)) == 2
        holders = [b for b in blocks if set(query) <= set(b)]
        assert holders == [blocks[sample.target]]  # only the target holds all query letters
        target = holders[0]
        assert answer == {"all": target, "first": target[0], "last": target[-1]}[variant]


def test_targets_and_query_orders_vary():
    task = ToyTask()
    samples = [task.sample(0, "train", i) for i in range(200)]
    positions = {s.target for s in samples}
    assert len(positions) > 30  # blocks are shuffled: the target sits anywhere
    queries = [task.text(s)[0].split("#")[1] for s in samples]
    targets = [task.text(s)[0].split(".")[s.target].split("#")[0] for s in samples]
    in_order = sum(t.index(q[0]) < t.index(q[1]) for q, t in zip(queries, targets, strict=True))
    assert 60 < in_order < 140  # query letters in random order


@pytest.mark.parametrize(("n", "variant"), CASES)
def test_token_layout_and_loss_mask(n, variant):
    task = ToyTask(n=n, variant=variant)
    tok = task.tokenizer
    tokens, mask = task.batch(3, "test", [0, 1])
    assert tokens.shape == (2, task.seq_len + 1) and mask.shape == (2, task.seq_len)
    for row, row_mask, i in zip(tokens, mask, (0, 1), strict=True):
        text, answer = task.text(task.sample(3, "test", i))
        assert row[0] == tok.bos_id and row[-1] == tok.eos_id
        assert tok.decode(row[1 : 1 + task.input_len].tolist()) == text
        targets = row[1:]
        assert targets[row_mask].tolist() == tok.encode(answer) + [tok.eos_id]  # exactly answer + EOS
        assert row_mask.sum() == len(answer) + 1


def test_padding_to_a_fixed_length():
    task = ToyTask(variant="first", length=324)
    tokens, mask = task.batch(0, "train", [0])
    assert tokens.shape == (1, 324) and (tokens[0, 317:] == task.tokenizer.pad_id).all()
    assert not mask[0, 317:].any() and mask[0].sum() == 2
    with pytest.raises(DataConfigError, match="length=300 must be >= the sample length 317"):
        ToyTask(variant="first", length=300)


def test_samples_are_pure_functions_of_seed_split_index():
    task = ToyTask(n=8, variant="last")
    a, b = task.batch(11, "train", [5, 6, 7]), task.batch(11, "train", [5, 6, 7])
    assert (a[0] == b[0]).all()
    assert (task.batch(11, "train", [6])[0][0] == a[0][1]).all()  # independent of the batch around it
    assert not (task.batch(12, "train", [5])[0][0] == a[0][0]).all()  # data_seed changes the samples


def test_train_and_test_are_disjoint_by_construction():
    task = ToyTask()
    train = {task.batch(0, "train", [i])[0][0, 1 : 1 + task.input_len].tobytes() for i in range(1500)}
    test_inputs = task.batch(0, "test", range(300))[0][:, 1 : 1 + task.input_len]
    assert all(split_of(x) == "test" for x in test_inputs)
    assert all(split_of(np.frombuffer(x, dtype=np.int64)) == "train" for x in list(train)[:300])
    assert train.isdisjoint(x.tobytes() for x in test_inputs)
    assert len(train) == 1500  # and no repeats inside the training sample
    assert TEST_BUCKETS == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"toy_l": 6}, r"data\.toy_l=6: query letters must be an integer between 1 and toy_n=5"),
        ({"toy_n": 26}, r"data\.toy_n=26: block size must be an integer between 1 and 25"),
        ({"toy_n": 1, "toy_l": 1}, r"data\.toy_blocks=156: only 25 distinct distractor blocks"),
        ({"toy_blocks": 1}, r"data\.toy_blocks=1: must be an integer >= 2"),
        ({"toy_variant": "middle"}, r"data\.toy_variant='middle': allowed: all, first, last"),
        ({"tokenizer": "gpt2.json"}, r"data\.tokenizer='gpt2\.json': the toy task always uses the character"),
        ({"toy_train_samples": 0}, r"data\.toy_train_samples=0: must be an integer >= 1"),
    ],
)
def test_bad_toy_configs(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        DataConfig(kind="toy", **kwargs)


def test_toy_bundle():
    config = DataConfig(kind="toy", toy_train_samples=1000, toy_test_samples=40, data_seed=3)
    bundle = build_data(config, seq_len=999)  # ignored: the task decides
    assert bundle.seq_len == 320 and bundle.tokenizer.vocab_size == 31
    assert bundle.info["blocks"] == 52 and bundle.info["input_chars"] == 314
    batch = bundle.train_batch(4, 6, seed=1)
    assert batch["tokens"].shape == (6, 321) and batch["loss_mask"].shape == (6, 320)
    assert batch["loss_mask"].sum(dim=1).tolist() == [6] * 6
    assert (bundle.train_batch(4, 6, seed=1)["tokens"] == batch["tokens"]).all()
    assert not (bundle.train_batch(4, 6, seed=2)["tokens"] == batch["tokens"]).all()  # seed: another order
    ranks = [bundle.train_batch(4, 3, seed=1, rank=r, world_size=2)["tokens"] for r in (0, 1)]
    assert (np.concatenate(ranks) == batch["tokens"].numpy()).all()  # the ranks split the step's samples
    val = bundle.val_batches(16)
    assert list(val) == ["toy"] and [len(b["tokens"]) for b in val["toy"]] == [16, 16, 8]
    test_inputs = {row[1:315].numpy().tobytes() for b in val["toy"] for row in b["tokens"]}
    train_rows = [row for s in range(20) for row in bundle.train_batch(s, 8, seed=0)["tokens"]]
    train_inputs = {row[1:315].numpy().tobytes() for row in train_rows}
    assert test_inputs.isdisjoint(train_inputs)
    assert build_data(config, seq_len=1).fingerprint == bundle.fingerprint
    assert build_data(DataConfig(kind="toy", data_seed=4), seq_len=1).fingerprint != bundle.fingerprint


def test_toy_epochs_cover_the_training_samples_once():
    bundle = build_data(DataConfig(kind="toy", toy_train_samples=24, toy_test_samples=1), seq_len=1)
    def rows(steps):
        return [row.numpy().tobytes() for s in steps for row in bundle.train_batch(s, 4, seed=0)["tokens"]]

    epochs = [rows(range(0, 6)), rows(range(6, 12))]
    assert len(set(epochs[0])) == 24 and set(epochs[0]) == set(epochs[1])  # every sample once per epoch
    assert epochs[0] != epochs[1]  # in a new order
