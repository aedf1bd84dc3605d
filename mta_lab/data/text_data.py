"""A packed text corpus as a DataBundle: non-overlapping windows of seq_len + 1 tokens.

Window ``i`` of a split starts at token ``i * seq_len`` of that split (windows share one boundary token, since
targets are the inputs shifted by one) and never crosses into the other split. Training (`sampling.py`):
- without ``source_weights``, the training windows of all domains form one pool, read in an epoch-wise
  permutation keyed by the seed: every window once per epoch (natural proportions);
- with ``source_weights``, each sample position picks its domain by weight with a keyed hash of the position,
  and each domain is read in its own epoch-wise permutation (at position ``p``, item
  ``perm_epoch(p mod epoch length)``): no window repeats within a domain's epoch and ranks never collide within
  a step (whenever a domain has at least world_size x batch_size windows).
Validation: the first ``val_windows`` (default all) windows of each domain's validation split, in order.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from mta_lab.data.bundle import Batch, DataBundle, as_batch, check_batch_args
from mta_lab.data.config import DataConfig, check_weights
from mta_lab.data.errors import DataConfigError
from mta_lab.data.fingerprint import stable_hash
from mta_lab.data.packing import PackedDomain, pack_domain, split_point
from mta_lab.data.sampling import epoch_items, key_of, step_positions, uniform
from mta_lab.data.sources import corpus_files
from mta_lab.data.tokenizers import load_tokenizer

TEXT_VERSION = "1"


def _fraction_for(num_tokens: int, need: int) -> float:
    """The shortest decimal val_fraction whose split leaves `need` tokens on both sides (num_tokens >= 2 * need)."""
    for digits in (2, 3, 4, 6):
        scale = 10**digits
        fraction = math.ceil(need / num_tokens * scale) / scale
        val = num_tokens - split_point(num_tokens, fraction)
        if val >= need and num_tokens - val >= need and fraction < 1:
            return fraction
    return need / num_tokens


class TextData(DataBundle):
    def __init__(self, config: DataConfig, *, seq_len: int) -> None:
        self.config, self.seq_len = config, seq_len
        self.tokenizer = load_tokenizer(config.tokenizer)
        files = corpus_files(config)
        if config.source_weights is not None:
            check_weights(config.source_weights, list(files))
        cache_dir = config.resolved_cache_dir()
        self.domains: dict[str, PackedDomain] = {
            name: pack_domain(name, domain_files, self.tokenizer, text_field=config.text_field, cache_dir=cache_dir)
            for name, domain_files in files.items()
        }
        self.names = list(self.domains)
        self.cuts = {name: split_point(d.num_tokens, config.val_fraction) for name, d in self.domains.items()}
        self.train_windows = np.array([max(0, (self.cuts[n] - 1) // seq_len) for n in self.names], dtype=np.int64)
        self.val_windows = {
            n: min(max(0, (d.num_tokens - self.cuts[n] - 1) // seq_len), config.val_windows or np.iinfo(np.int64).max)
            for n, d in self.domains.items()
        }
        self.weights = self._weights()
        self._check_sizes()
        self.pool_starts = np.concatenate([[0], np.cumsum(self.train_windows)[:-1]])  # unweighted: one pool
        self.fingerprint = self._fingerprint()
        self.info = self._info()
        self._memmaps: dict[str, np.memmap] = {}
        self._val_cache: dict[int, dict[str, list[Batch]]] = {}

    # ------------------------------------------------------------------ construction
    def _weights(self) -> np.ndarray | None:
        if self.config.source_weights is None:
            return None
        weights = np.array([float(self.config.source_weights[n]) for n in self.names])
        return weights / weights.sum()

    def _check_sizes(self) -> None:
        need = self.seq_len + 1  # a window is seq_len inputs + 1 shifted target
        window = f"one window of seq_len + 1 = {need} tokens"
        for name, d in self.domains.items():
            if d.num_tokens < 2 * need:  # no val_fraction can help: both splits need a window
                raise DataConfigError(
                    f"data domain {name!r} has {d.num_tokens} tokens, too few for one training and one validation "
                    f"window of seq_len + 1 = {need} tokens each ({2 * need} tokens); use more text, or a shorter "
                    f"sequence (train.seq_len <= {max(1, d.num_tokens // 2 - 1)} for these tokens)"
                )
            if self.val_windows[name] == 0:
                fraction = _fraction_for(d.num_tokens, need)
                raise DataConfigError(
                    f"data domain {name!r}: its validation split ({d.num_tokens - self.cuts[name]} tokens) is shorter "
                    f"than {window}; raise data.val_fraction to at least {fraction:g} (now "
                    f"{self.config.val_fraction:g}) or lower the sequence length"
                )
        trained = self.train_windows if self.weights is None else self.train_windows[self.weights > 0]
        if trained.sum() == 0 or (self.weights is not None and (trained == 0).any()):
            short = [n for n, w in zip(self.names, self.train_windows, strict=True) if w == 0]
            raise DataConfigError(
                f"data domain(s) {', '.join(short)}: the training split is shorter than {window}; "
                "use more text, a lower sequence length, a lower data.val_fraction, or source weight 0 for these "
                "domains"
            )

    def _fingerprint(self) -> str:
        c = self.config
        described = {
            "kind": "text", "corpus": c.corpus, "format": c.format, "text_field": c.text_field,
            "val_fraction": c.val_fraction, "val_windows": c.val_windows, "source_weights": c.source_weights,
            "domains": {n: [d.num_tokens, d.content_hash] for n, d in self.domains.items()},
        }
        return stable_hash("text", TEXT_VERSION, self.tokenizer.fingerprint, json.dumps(described, sort_keys=True))

    def _info(self) -> dict[str, Any]:
        domains = {}
        for i, (name, d) in enumerate(self.domains.items()):
            domains[name] = {
                "documents": d.num_documents, "tokens": d.num_tokens,
                "train_tokens": self.cuts[name], "val_tokens": d.num_tokens - self.cuts[name],
                "train_windows": int(self.train_windows[i]), "val_windows": int(self.val_windows[name]),
                "weight": None if self.weights is None else float(self.weights[i]),
                "cache": "hit" if d.cache_hit else "built", "cache_file": d.path,
            }
        return {
            "kind": "text", "corpus": self.config.corpus, "tokenizer": self.config.tokenizer,
            "vocab_size": self.tokenizer.vocab_size, "seq_len": self.seq_len, "val_fraction": self.config.val_fraction,
            "train_tokens": sum(v["train_tokens"] for v in domains.values()),
            "val_tokens": sum(v["val_tokens"] for v in domains.values()),
            "domains": domains,
        }

    # ------------------------------------------------------------------ reading
    def tokens(self, name: str) -> np.memmap:
        if name not in self._memmaps:
            self._memmaps[name] = self.domains[name].tokens()
        return self._memmaps[name]

    def __getstate__(self) -> dict[str, Any]:  # worker processes reopen the memmaps instead of copying them
        return {**self.__dict__, "_memmaps": {}, "_val_cache": {}}

    def _windows(self, name: str, starts: np.ndarray) -> np.ndarray:
        tokens = self.tokens(name)
        return np.stack([tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)

    def train_batch(self, step: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> Batch:
        check_batch_args(step, batch_size, rank, world_size)
        positions = step_positions(step, batch_size, rank, world_size)
        group = batch_size * world_size
        if self.weights is None:
            items = epoch_items(positions, int(self.train_windows.sum()), group, key_of(seed, "text"))
            domain = np.searchsorted(self.pool_starts, items, side="right") - 1
            window = items - self.pool_starts[domain]
        else:
            cumulative = np.cumsum(self.weights)
            cumulative[-1] = 1.0
            domain = np.searchsorted(cumulative, uniform(key_of(seed, "domain"), positions), side="right")
            window = np.empty_like(positions)
            for d in np.unique(domain):
                at = domain == d
                key = key_of(seed, "text", self.names[d])
                window[at] = epoch_items(positions[at], int(self.train_windows[d]), group, key)
        tokens = np.empty((batch_size, self.seq_len + 1), dtype=np.int64)
        for d in np.unique(domain):
            at = domain == d
            tokens[at] = self._windows(self.names[d], window[at] * self.seq_len)
        return as_batch(tokens, np.ones((batch_size, self.seq_len), dtype=bool))

    def val_batches(self, batch_size: int) -> dict[str, list[Batch]]:
        if batch_size not in self._val_cache:
            self._val_cache[batch_size] = {name: self._domain_val_batches(name, batch_size) for name in self.names}
        return self._val_cache[batch_size]

    def _domain_val_batches(self, name: str, batch_size: int) -> list[Batch]:
        starts = self.cuts[name] + np.arange(self.val_windows[name], dtype=np.int64) * self.seq_len
        batches = []
        for i in range(0, len(starts), batch_size):
            windows = self._windows(name, starts[i : i + batch_size])
            batches.append(as_batch(windows, np.ones((len(windows), self.seq_len), dtype=bool)))
        return batches
