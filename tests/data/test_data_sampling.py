"""Stateless sampling: keyed permutations are bijections; epochs cover items once; steps never straddle epochs."""

from __future__ import annotations

import numpy as np
import pytest

from mta_lab.data.sampling import epoch_items, key_of, permute, step_positions, uniform


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 4097])
def test_permute_is_a_bijection(size):
    out = permute(np.arange(size), size, key_of(3, "x"))
    assert sorted(out.tolist()) == list(range(size))


def test_permute_depends_on_the_key_and_looks_random():
    a, b = permute(np.arange(1000), 1000, 1), permute(np.arange(1000), 1000, 2)
    assert (a != b).mean() > 0.9
    assert abs(np.corrcoef(np.arange(1000), a)[0, 1]) < 0.1


def test_permute_handles_huge_sizes():
    size = 50_000_000_000  # 100T tokens / 2048: no memory needed
    out = permute(np.array([0, 1, size - 1]), size, 7)
    assert ((0 <= out) & (out < size)).all() and len(set(out.tolist())) == 3


def test_epochs_cover_items_once_and_drop_the_remainder():
    size, group = 10, 4  # 8 positions per epoch: 2 items left out, different ones each epoch
    items = epoch_items(np.arange(24), size, group, key=5)
    epochs = items.reshape(3, 8)
    assert all(len(set(e.tolist())) == 8 for e in epochs)
    assert len({frozenset(e.tolist()) for e in epochs}) > 1  # the left-out items change with the epoch


def test_step_positions_tile_the_ranks():
    positions = np.concatenate([step_positions(3, 5, r, 4) for r in range(4)])
    assert positions.tolist() == list(range(60, 80))


def test_uniform_is_uniform_and_deterministic():
    u = uniform(9, np.arange(100_000))
    assert ((0 <= u) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.01
    assert (uniform(9, np.arange(5)) == u[:5]).all() and not (uniform(10, np.arange(5)) == u[:5]).all()
