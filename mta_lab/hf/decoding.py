"""The decoding cache `mta_lab.model.generate` uses with a Hugging Face model (`HFLanguageModel.new_cache()`).

Layers whose kernels read one query row (softmax, Talking heads, key-axis-only kq convolutions) decode with HF's KV
cache (`DynamicCache`): one forward per new token over the cached keys and values, exactly. A kq convolution over
c_q > 1 query rows needs the past c_q - 1 query rows, which that cache does not keep; such a model decodes by
recomputation: the cache holds the tokens so far and every step runs the full forward over them, returning the new
positions' logits (O(T²) per token: the same tokens, slower).
"""

from __future__ import annotations

import torch
from torch import Tensor


class HFDecodingCache:
    def __init__(self, recompute: bool) -> None:
        self.recompute = recompute
        self.past = None  # transformers' DynamicCache, once the prompt went through
        self.tokens: Tensor | None = None  # recompute: every token so far

    def step(self, hf_model, tokens: Tensor) -> Tensor:
        """Logits (B, n, vocab) of the n new `tokens` (B, n), given everything this cache has seen."""
        if self.recompute:
            self.tokens = tokens if self.tokens is None else torch.cat((self.tokens, tokens), dim=1)
            return hf_model(input_ids=self.tokens, use_cache=False).logits[:, -tokens.shape[1]:]
        out = hf_model(input_ids=tokens, past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits

    def nbytes(self) -> int:
        """Bytes held: the cached keys and values (or, recomputing, the token ids)."""
        if self.recompute:
            return 0 if self.tokens is None else self.tokens.numel() * self.tokens.element_size()
        total = 0
        for layer in getattr(self.past, "layers", None) or []:
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, Tensor):
                    total += t.numel() * t.element_size()
        return total
