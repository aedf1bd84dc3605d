"""Stateless sampling: which item a training sample position reads, as a pure function of the position.

Training resumes exactly from any step because nothing here has state. Positions: sample ``b`` of rank ``r``
at step ``s`` (world size ``w``, batch size ``B``) is position ``p = (s * w + r) * B + b``; the ``G = w * B``
positions of one step form a group.

`epoch_items` maps positions to items of ``range(size)``: epoch ``e`` is a fresh pseudorandom permutation of
the items (keyed by the seed, the stream and ``e``) read in order, ``size // G * G`` positions long (the
remainder, different items each epoch, is dropped as with ``drop_last``). So a step never straddles two
epochs, and all samples of a step, across ranks, are distinct items whenever ``size >= G``.

The permutation is a keyed Feistel network over the next power of four with cycle-walking: O(1) memory and
time per position, however many items (a 100B-token corpus has 50M windows of 2048).
"""

from __future__ import annotations

import hashlib

import numpy as np

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
ROUNDS = 4


def key_of(*parts: int | str) -> int:
    """A 64-bit key from a tuple of ints and strings (stable across runs and machines)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-mixing hash of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def uniform(key: int, positions: np.ndarray) -> np.ndarray:
    """One pseudorandom float in [0, 1) per position."""
    with np.errstate(over="ignore"):
        x = mix64(np.asarray(positions, dtype=np.uint64) * _GOLDEN + np.uint64(key))
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def permute(index: np.ndarray, size: int, key: int) -> np.ndarray:
    """The images of `index` under a pseudorandom bijection of range(size) chosen by `key`."""
    half = (max(2, (size - 1).bit_length()) + 1) // 2  # a Feistel network on 2*half bits covers range(size)
    mask = np.uint64((1 << half) - 1)
    round_keys = [np.uint64(key_of(key, r)) for r in range(ROUNDS)]

    def feistel(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for k in round_keys:
            left, right = right, left ^ (mix64(right ^ k) & mask)
        return (left << np.uint64(half)) | right

    out = feistel(np.asarray(index, dtype=np.uint64))
    outside = out >= size
    while outside.any():  # cycle-walking: apply again until inside; a bijection of range(size) results
        out[outside] = feistel(out[outside])
        outside = out >= size
    return out.astype(np.int64)


def epoch_items(positions: np.ndarray, size: int, group: int, key: int) -> np.ndarray:
    """Item of range(size) read at each position (see the module docstring)."""
    positions = np.asarray(positions, dtype=np.int64)
    per_epoch = size // group * group if size >= group else size
    epochs, offsets = np.divmod(positions, per_epoch)
    out = np.empty_like(positions)
    for epoch in np.unique(epochs):
        at = epochs == epoch
        out[at] = permute(offsets[at], size, key_of(key, int(epoch)))
    return out


def step_positions(step: int, batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """Global sample positions of one rank's batch at one step."""
    start = (step * world_size + rank) * batch_size
    return np.arange(start, start + batch_size, dtype=np.int64)
