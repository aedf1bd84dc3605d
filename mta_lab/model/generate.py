"""Autoregressive sampling with the incremental decoding cache (`mta_lab/attention/decoding.py`).

The prompt goes through the normal full forward once, with an empty cache that it fills (`model(prompt, cache)`);
every new token then costs one `model(token, cache)`: O(T) attention work per layer, not a recomputation of the
whole T×T attention. `use_cache=False` recomputes the full forward for every token instead (a reference, O(T²)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mta_lab.errors import UsageError
from mta_lab.model.transformer import Transformer


@dataclass
class Generation:
    """Tokens (B, T_prompt + new) and timings; `new_tokens` counts the sampled tokens per sequence."""

    tokens: Tensor
    prompt_len: int
    new_tokens: int
    prefill_s: float
    decode_s: float
    cache_bytes: int

    @property
    def tokens_per_s(self) -> float:
        """Sampled tokens per second over the whole batch (prefill + decoding)."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens * self.tokens.shape[0] / total if total > 0 else float("inf")


def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row of logits (B, vocab): greedy when temperature == 0, else softmax(logits / temperature)
    restricted to the top_k largest logits (None or 0: all)."""
    if temperature < 0:
        raise UsageError(f"temperature={temperature}: must be >= 0 (0 = greedy)")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generate(model: Transformer, prompt: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None, eos_id: int | None = None,
             use_cache: bool = True) -> Generation:
    """Sample up to max_new_tokens after prompt (B, T) of token ids (T >= 1), in eval mode.

    Stops early once every sequence has produced eos_id (if given; later tokens of a finished sequence are
    eos_id too). Prompt + new tokens must fit in model.config.max_seq_len.
    """
    if prompt.dim() == 1:
        prompt = prompt.unsqueeze(0)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise UsageError(f"the prompt must hold at least one token (got shape {tuple(prompt.shape)})")
    if max_new_tokens < 0:
        raise UsageError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    limit = model.config.max_seq_len
    if prompt.shape[1] + max_new_tokens > limit:
        raise UsageError(f"prompt ({prompt.shape[1]} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
                         f"max_seq_len={limit}; shorten the prompt or ask for fewer tokens")
    was_training = model.training
    model.eval()
    device = prompt.device
    try:
        _sync(device)
        start = time.perf_counter()
        cache = model.new_cache() if use_cache else None
        logits = model(prompt, cache)
        _sync(device)
        prefill_s = time.perf_counter() - start
        tokens = prompt
        done = torch.zeros(prompt.shape[0], dtype=torch.bool, device=device)
        start = time.perf_counter()
        new = 0
        for _ in range(max_new_tokens):
            nxt = sample_next(logits[:, -1], temperature=temperature, top_k=top_k, generator=generator)
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done |= nxt == eos_id
            tokens = torch.cat((tokens, nxt.unsqueeze(1)), dim=1)
            new += 1
            if eos_id is not None and bool(done.all()):
                break
            if new < max_new_tokens:
                logits = model(nxt.unsqueeze(1), cache) if use_cache else model(tokens)
        _sync(device)
        decode_s = time.perf_counter() - start
    finally:
        model.train(was_training)
    return Generation(tokens=tokens, prompt_len=prompt.shape[1], new_tokens=new, prefill_s=prefill_s,
                      decode_s=decode_s, cache_bytes=cache.nbytes() if cache is not None else 0)
