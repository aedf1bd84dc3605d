"""The paper's toy task, "find the block" (mta-spec.md §5, paper Table 1).

A sample, for N = 5, L = 2 (52 blocks; the input is 311 + 1 + 2 = 314 characters)::

    qwert.zxcvb. ... .asdfg.hjklm#sa      ->  answer "asdfg" (all) | "a" (first) | "g" (last), then EOS

- Blocks are N distinct letters a-z in random order, joined by ".". All blocks are distinct.
- One block is the target; the query is L distinct letters of the target in random order, after "#".
- No other (distractor) block contains all L query letters, so the answer is unique. Blocks are shuffled.
- Block count: ``blocks`` or, by default, ``round(312 / (N + 1))``: the count whose blocks and separators come
  closest to the paper's 311 characters, never cutting a block: 52 for N = 5 (311 chars), 35 for N = 8 (314).

Tokens (character tokenizer, `tokenizers.TOY_ALPHABET`): ``BOS + input + answer + EOS`` (then PAD up to
``length`` if one is given; every sample of a task has the same length anyway). ``loss_mask[t]`` says whether
the target ``tokens[t + 1]`` counts: exactly the answer tokens and the EOS. `seq_len` = tokens - 1 is the
model's input length: 320 for N = 5 "all", 316 for "first"/"last"; 326 / 319 for N = 8.

Sample ``i`` of a split is a pure function of ``(data_seed, split, i)``: its generator is seeded with
``(data_seed, split id, i)``, so a million training samples need no storage.

Train and test are disjoint by construction. Every input string x has a bucket
``h(x) = blake2b-64(x) mod TEST_BUCKETS``; the test split keeps only inputs with ``h(x) == 0`` and the training
split only inputs with ``h(x) != 0`` (a sample of the wrong bucket is re-drawn from the same generator). No input
can be in both, and the answer is a function of the input, so no sample is either. Conditioning on a hash bucket
leaves the task distribution unchanged in every property that matters (the hash ignores the task's structure);
it costs 8/7 draws per training sample and 8 per test sample.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mta_lab.data.errors import DataConfigError, fail
from mta_lab.data.tokenizers import TOY_ALPHABET, CharTokenizer

LETTERS = 26
DOT = TOY_ALPHABET.index(".")
HASH = TOY_ALPHABET.index("#")
SPLITS = {"train": 0, "test": 1}
TEST_BUCKETS = 8
VARIANTS = ("all", "first", "last")


def default_blocks(n: int) -> int:
    """52 for N = 5, 35 for N = 8: blocks + separators closest to the paper's 311 characters."""
    return max(2, round(312 / (n + 1)))


def split_of(input_ids: np.ndarray) -> str:
    """The split an input (token ids of blocks + "#" + query, without BOS) belongs to."""
    digest = hashlib.blake2b(np.asarray(input_ids, dtype=np.uint8).tobytes(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % TEST_BUCKETS == 0 else "train"


@dataclass(frozen=True)
class ToySample:
    """One generated sample: letter ids (0 = 'a') of the blocks, the target's row and the query."""

    blocks: np.ndarray  # (num_blocks, N)
    target: int
    query: np.ndarray  # (L,)


@dataclass(frozen=True)
class ToyTask:
    """Generator of "find the block" samples. n = N (block size), l = L (query letters)."""

    n: int = 5
    l: int = 2
    variant: str = "all"
    blocks: int | None = None
    length: int | None = None  # pad to this many tokens; None: the exact length

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise fail("toy_variant", self.variant, f"allowed: {', '.join(VARIANTS)}")
        if not isinstance(self.n, int) or not 1 <= self.n <= LETTERS - 1:
            raise fail("toy_n", self.n, f"block size must be an integer between 1 and {LETTERS - 1}")
        if not isinstance(self.l, int) or not 1 <= self.l <= self.n:
            raise fail("toy_l", self.l, f"query letters must be an integer between 1 and toy_n={self.n}")
        if self.blocks is not None and (not isinstance(self.blocks, int) or self.blocks < 2):
            raise fail("toy_blocks", self.blocks, "must be an integer >= 2, or null for the default")
        distractors = (math.comb(LETTERS, self.n) - math.comb(LETTERS - self.l, self.n - self.l)) * math.factorial(
            self.n
        )
        if distractors < 2 * (self.num_blocks - 1):
            raise fail(
                "toy_blocks", self.num_blocks,
                f"only {distractors} distinct distractor blocks exist for toy_n={self.n}, toy_l={self.l}; "
                "use fewer blocks, a larger toy_n or a smaller toy_l",
            )
        if self.length is not None and self.length < self.exact_length:
            raise DataConfigError(f"toy task: length={self.length} must be >= the sample length {self.exact_length}")

    # ------------------------------------------------------------------ sizes
    @property
    def num_blocks(self) -> int:
        return self.blocks if self.blocks is not None else default_blocks(self.n)

    @property
    def input_len(self) -> int:
        """Characters of blocks + "#" + query: 314 for N = 5."""
        return self.num_blocks * (self.n + 1) - 1 + 1 + self.l

    @property
    def answer_len(self) -> int:
        return self.n if self.variant == "all" else 1

    @property
    def exact_length(self) -> int:
        return 1 + self.input_len + self.answer_len + 1

    @property
    def num_tokens(self) -> int:
        """Tokens per sample (BOS + input + answer + EOS [+ PAD])."""
        return self.length if self.length is not None else self.exact_length

    @property
    def seq_len(self) -> int:
        """Model input length: targets are the tokens shifted by one."""
        return self.num_tokens - 1

    @cached_property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(TOY_ALPHABET)

    @cached_property
    def loss_mask(self) -> np.ndarray:
        """(seq_len,) bool: True exactly where the target is an answer token or the EOS."""
        mask = np.zeros(self.seq_len, dtype=bool)
        mask[self.input_len : self.input_len + self.answer_len + 1] = True
        return mask

    # ------------------------------------------------------------------ generation
    def sample(self, data_seed: int, split: str, index: int) -> ToySample:
        """Sample `index` of `split`: a pure function of its arguments."""
        rng = np.random.default_rng([data_seed, SPLITS[split], index])
        while True:
            sample = self._draw(rng)
            if split_of(self._input_ids(sample)) == split:
                return sample

    def _draw(self, rng: np.random.Generator) -> ToySample:
        n, need = self.n, self.num_blocks - 1
        target = np.argsort(rng.random(LETTERS))[:n]
        query = target[rng.permutation(n)[: self.l]]
        pool = target[None, :]  # row 0 is the target; distractors are the first distinct valid draws after it
        while True:
            candidates = np.argsort(rng.random((need + 8, LETTERS)), axis=1)[:, :n]
            has_query = (candidates[:, :, None] == query[None, None, :]).any(axis=1).all(axis=1)
            pool = np.concatenate([pool, candidates[~has_query]])
            keys = (pool + 1).astype(np.uint8).view(f"S{n}").ravel()  # one bytes key per block
            first = np.sort(np.unique(keys, return_index=True)[1])
            if len(first) > need:
                break
        order = rng.permutation(self.num_blocks)  # shuffles the blocks; the target is row 0 before
        blocks = pool[first[: need + 1]][order]
        return ToySample(blocks=blocks, target=int(np.flatnonzero(order == 0)[0]), query=query)

    def _input_ids(self, sample: ToySample) -> np.ndarray:
        rows = np.concatenate([sample.blocks, np.full((len(sample.blocks), 1), DOT)], axis=1).reshape(-1)[:-1]
        return np.concatenate([rows, [HASH], sample.query])

    def answer_ids(self, sample: ToySample) -> np.ndarray:
        target = sample.blocks[sample.target]
        return {"all": target, "first": target[:1], "last": target[-1:]}[self.variant]

    def tokens(self, sample: ToySample) -> np.ndarray:
        """(num_tokens,) int64: BOS + input + answer + EOS, then PAD."""
        tok = self.tokenizer
        out = np.full(self.num_tokens, tok.pad_id, dtype=np.int64)
        seq = np.concatenate([[tok.bos_id], self._input_ids(sample), self.answer_ids(sample), [tok.eos_id]])
        out[: len(seq)] = seq
        return out

    def text(self, sample: ToySample) -> tuple[str, str]:
        """(input, answer) as strings, e.g. ("qwert. ... #sa", "asdfg")."""
        decode = self.tokenizer.decode
        return decode(self._input_ids(sample).tolist()), decode(self.answer_ids(sample).tolist())

    def batch(self, data_seed: int, split: str, indices: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """tokens (B, num_tokens) int64 and loss_mask (B, seq_len) bool for the given sample indices."""
        tokens = np.stack([self.tokens(self.sample(data_seed, split, int(i))) for i in indices])
        return tokens, np.broadcast_to(self.loss_mask, (len(tokens), self.seq_len)).copy()
