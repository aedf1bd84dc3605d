"""Incremental decoding cache: what each attention layer keeps so one new token costs O(T), not O(T²).

Per layer (`LayerCache`), for a batch of B sequences of the same length T:
- ``keys`` (B, h, T, d_k): keys after RoPE (DIFF: both rotated halves side by side);
- ``values`` (B, h, T, d_v);
- ``queries`` (B, h, c_q - 1, d): the last c_q - 1 query rows after RoPE, for the pre-softmax key-query
  convolution (its window reads c_q - 1 earlier query rows; rows before position 0 are zero, which is the same
  as the convolution's zero padding). None when the layer has no pre-softmax kq conv;
- ``probs`` (B, h, c_q' - 1, T): the last c_q' - 1 rows of normalised attention probabilities (spec §2 step 4,
  before the post-softmax kq conv), zero at keys after their own row and for rows before position 0. None when
  the layer has no post-softmax kq conv.

Keys and values grow by one row per token; the query and probability windows keep a fixed number of rows (the
probability rows gain one column per token), so the cache grows linearly in T. The attention layers fill it
(`AttentionBase.prefill` / `AttentionBase.decode`); `Transformer.prefill` / `Transformer.decode_step` drive it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class LayerCache:
    """One attention layer's cached state (None until the layer first sees a token)."""

    keys: Tensor | None = None
    values: Tensor | None = None
    queries: Tensor | None = None
    probs: Tensor | None = None

    @property
    def length(self) -> int:
        """Tokens seen so far (T)."""
        return 0 if self.keys is None else self.keys.shape[2]

    def tensors(self) -> dict[str, Tensor]:
        return {name: t for name in ("keys", "values", "queries", "probs") if (t := getattr(self, name)) is not None}

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


@dataclass
class DecodeCache:
    """The whole model's cache: one `LayerCache` per layer, all at the same length."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int) -> DecodeCache:
        return cls([LayerCache() for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def numel(self) -> int:
        return sum(layer.numel() for layer in self.layers)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)
