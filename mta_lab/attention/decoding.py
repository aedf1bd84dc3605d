"""Incremental decoding state: what each attention layer keeps so a new token costs O(T), not O(T²).

Per layer (`LayerCache`), for a batch of B sequences of the same length T:
- ``keys`` (B, h, T, d_k): keys after RoPE (DIFF: both rotated halves side by side);
- ``values`` (B, h, T, d_v);
- ``queries`` (B, h, c_q - 1, d): the last c_q - 1 query rows after RoPE, for the pre-softmax key-query
  convolution (its window reads c_q - 1 earlier query rows; rows before position 0 are zero, which is the same
  as the convolution's zero padding). None when the layer has no pre-softmax kq conv of c_q > 1;
- ``probs`` (B, h, c_q' - 1, T): the last c_q' - 1 rows of normalised attention probabilities (spec §2 step 4,
  before the post-softmax kq conv), zero at keys after their own row and for rows before position 0. None when
  the layer has no post-softmax kq conv of c_q' > 1.

Keys and values grow by one row per token; the query and probability windows keep a fixed number of rows (the
probability rows gain one column per token), so the cache grows linearly in T. An attention layer's
`forward(x, rope, cache)` fills an empty `LayerCache` during the full forward over a prompt and reads and extends
a filled one for new tokens; a model hands each layer its entry of a `DecodeCache`. The row helpers below are the
cached path's pieces of the op: the causal mask, the key-query convolution and the softmax, restricted to the
new query rows.

`StaticLayerCache` holds the same state in tensors of a fixed capacity that never change shape or address, and
its position also as a device tensor (`offset`): a decoding step over it reads and writes the same memory every
time, so it can be captured once as a CUDA graph and replayed (`mta_lab/model/generate.py`). Keys beyond the
filled length are zero and never seen: the causal mask already hides every key after a query's own position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.spec import key_center


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

    @property
    def offset(self) -> int | Tensor:
        """The position of the next token: `length`, as an int here (a device tensor in `StaticLayerCache`)."""
        return self.length

    def store(self, keys: Tensor, values: Tensor) -> None:
        """Fill an empty cache with a prompt's keys (after RoPE) and values (B, h, T, ·)."""
        self.keys, self.values = keys, values

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys (after RoPE) and values (B, h, n, ·) to a filled cache; the whole cached keys and values."""
        self.keys, self.values = torch.cat((self.keys, keys), dim=2), torch.cat((self.values, values), dim=2)
        return self.keys, self.values

    def set_window(self, name: str, rows: Tensor) -> None:
        """Replace the query or probability window ("queries", "probs") by `rows` (a copy)."""
        setattr(self, name, rows.clone())

    def advance_host(self, n: int) -> None:
        """Nothing to do: a growing cache's length is its tensors' (see `StaticLayerCache`)."""

    def tensors(self) -> dict[str, Tensor]:
        return {name: t for name in ("keys", "values", "queries", "probs") if (t := getattr(self, name)) is not None}

    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


class StaticLayerCache(LayerCache):
    """A `LayerCache` of at most `capacity` tokens in tensors allocated once: keys and values (B, h, capacity, ·)
    filled up to `length`, probability rows (B, h, c_q' - 1, capacity); `offset` is the position as an int64
    device tensor of shape (1,), advanced on the device by `append`, so a captured step stays right on replay.
    `length` (a host int) follows it for the calls that run on the host; `advance_host` moves it alone after a
    replayed step (whose `append` ran on the device only)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity={capacity}: a static cache holds at least one token")
        self.capacity = capacity
        self.filled = 0
        self.position: Tensor | None = None

    @property
    def length(self) -> int:
        return self.filled

    @property
    def offset(self) -> int | Tensor:
        """A copy of the device position (`append` advances the original in place)."""
        return self.position.clone() if self.position is not None else 0

    def _room(self, n: int) -> None:
        if self.filled + n > self.capacity:
            raise ValueError(f"{self.filled} + {n} tokens exceed the static cache's capacity of {self.capacity}: "
                             "make the cache with a larger capacity")

    def store(self, keys: Tensor, values: Tensor) -> None:
        b, h, t, _ = keys.shape
        self._room(t)
        self.keys = keys.new_zeros(b, h, self.capacity, keys.shape[-1])
        self.values = values.new_zeros(b, h, self.capacity, values.shape[-1])
        self.keys[:, :, :t], self.values[:, :, :t] = keys, values
        self.filled = t
        self.position = torch.full((1,), t, dtype=torch.long, device=keys.device)

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        n = keys.shape[2]
        self._room(n)
        index = self.position + torch.arange(n, device=keys.device)
        self.keys.index_copy_(2, index, keys.to(self.keys.dtype))
        self.values.index_copy_(2, index, values.to(self.values.dtype))
        self.position += n
        self.filled += n
        return self.keys, self.values

    def advance_host(self, n: int) -> None:
        self.filled += n

    def set_window(self, name: str, rows: Tensor) -> None:
        if name == "probs" and rows.shape[-1] < self.capacity:  # a prompt's rows: pad to the capacity's columns
            rows = F.pad(rows, (0, self.capacity - rows.shape[-1]))
        window = getattr(self, name)
        if window is None:
            setattr(self, name, rows.clone())
        else:
            window.copy_(rows)


@dataclass
class DecodeCache:
    """A whole model's cache: one `LayerCache` per layer, all at the same length."""

    layers: list[LayerCache] = field(default_factory=list)

    @classmethod
    def empty(cls, n_layers: int, capacity: int | None = None) -> DecodeCache:
        """Growing layer caches, or with a capacity `StaticLayerCache`s of that many tokens."""
        return cls([LayerCache() if capacity is None else StaticLayerCache(capacity) for _ in range(n_layers)])

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    @property
    def offset(self) -> int | Tensor:
        """The next token's position: an int, or a device tensor for static caches (what RoPE tables read)."""
        return self.layers[0].offset if self.layers else 0

    def advance_host(self, n: int) -> None:
        """After a replayed CUDA-graph step: move the host-side lengths of static caches by n tokens."""
        for layer in self.layers:
            layer.advance_host(n)

    @property
    def batch_size(self) -> int | None:
        """Sequences held (None while empty)."""
        return self.layers[0].keys.shape[0] if self.length else None

    def numel(self) -> int:
        return sum(layer.numel() for layer in self.layers)

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


def visible(row0: int | Tensor, n_rows: int, n_keys: int, device: torch.device) -> Tensor:
    """(n_rows, n_keys) mask, True where key j may be seen from absolute query row row0 + i (j <= row0 + i);
    row0 an int or a (1,) device tensor (a static cache's offset)."""
    rows = (torch.arange(n_rows, device=device) + row0).unsqueeze(1)
    return torch.arange(n_keys, device=device).unsqueeze(0) <= rows


def kq_conv_rows(x: Tensor, kernel: Tensor, pad_key: str) -> Tensor:
    """`reference.kq_conv` restricted to its last rows: x (B, h, c_q - 1 + n, T) holds the c_q - 1 rows above the
    n wanted ones (zero where they would be padding); zero-padded on the key axis only. Returns (B, h, n, T)."""
    c_k = kernel.shape[2]
    left = key_center(c_k, pad_key)
    padded = F.pad(x, (left, c_k - 1 - left))
    return F.conv2d(padded, kernel.to(x.dtype).unsqueeze(1), groups=kernel.shape[0])


def last_rows(x: Tensor, m: int) -> Tensor:
    """The last m rows (axis 2) of x, zero rows on top when x has fewer."""
    t = x.shape[2]
    return F.pad(x, (0, 0, m - t, 0)) if t < m else x[:, :, t - m:].clone()


def softmax_rows(q: Tensor, keys: Tensor, values: Tensor, pos: int | Tensor) -> Tensor:
    """Causal softmax attention of query rows pos .. pos + n - 1 (after RoPE) over all cached keys.

    Through `scaled_dot_product_attention` with the visibility mask: its fused kernels keep scores and softmax in
    float32 (the spec's precision) while reading the cache in its own dtype, where upcasting the whole cache to
    float32 first would read and write it three times per step."""
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=visible(pos, q.shape[2], keys.shape[2], q.device))
