"""Autoregressive sampling with the incremental decoding cache (`mta_lab/attention/decoding.py`).

The prompt goes through the normal full forward once, with an empty cache that it fills (`model(prompt, cache)`),
or, with `prefill_chunk=N`, its first N tokens do and the rest follow N at a time through the cached path (the
same outputs; score maps of N rows, not T, where a long prompt's full forward would not fit); every new token
then costs one `model(token, cache)`: O(T) attention work per layer, not a recomputation of the whole T×T
attention. `use_cache=False` recomputes the full forward for every token instead (a reference, O(T²)).

On CUDA (`graph="auto"`) the cache is static (`StaticLayerCache`: sized for prompt + new tokens, position on the
device) and the one-token step is captured once as a CUDA graph (`GraphStep`) and replayed for every later token:
a decoding step is hundreds of small kernels whose launches, not the GPU, bound it in eager mode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mta_lab.attention.decoding import DecodeCache, StaticLayerCache
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


class GraphStep:
    """`model(tokens, cache)` for one new token per sequence over a static cache, as a CUDA graph.

    The first `warmup` calls run eagerly on a side stream (CUDA graphs need their libraries' lazy set-up done
    before capture); the next is captured and replayed, and every later one only replays: the new tokens are
    copied into the graph's input, the logits come back in its output tensor (overwritten by the next call).
    Each call is a real decoding step: warm-up and capture steps extend the cache like the replays.
    """

    def __init__(self, model: Transformer, cache: DecodeCache, *, warmup: int = 2) -> None:
        if not all(isinstance(layer, StaticLayerCache) for layer in cache.layers):
            raise ValueError("GraphStep needs a static cache: model.new_cache(capacity=...)")
        self.model, self.cache, self.warmup = model, cache, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.tokens: Tensor | None = None
        self.logits: Tensor | None = None
        self.stream = torch.cuda.Stream()

    def __call__(self, tokens: Tensor) -> Tensor:
        if self.graph is not None:
            room = self.cache.layers[0]
            if room.length + tokens.shape[1] > room.capacity:  # replays skip append's own check
                raise ValueError(f"the static cache is full ({room.capacity} tokens)")
            self.tokens.copy_(tokens)
            self.graph.replay()
            self.cache.advance_host(tokens.shape[1])  # append ran on the device only
            return self.logits
        self.stream.wait_stream(torch.cuda.current_stream())
        if self.warmup > 0:
            self.warmup -= 1
            with torch.cuda.stream(self.stream):
                logits = self.model(tokens, self.cache)
            torch.cuda.current_stream().wait_stream(self.stream)
            return logits
        self.tokens = tokens.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.logits = self.model(self.tokens, self.cache)  # recorded, not run; the host length moved already
        self.graph.replay()
        return self.logits


@torch.no_grad()
def generate(model: Transformer, prompt: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None, eos_id: int | None = None,
             use_cache: bool = True, graph: bool | str = "auto", prefill_chunk: int | None = None) -> Generation:
    """Sample up to max_new_tokens after prompt (B, T) of token ids (T >= 1), in eval mode.

    Stops early once every sequence has produced eos_id (if given; later tokens of a finished sequence are
    eos_id too). Prompt + new tokens must fit in model.config.max_seq_len. graph: decode through a static cache
    and a CUDA graph (`GraphStep`); "auto": on CUDA with the cache, for models that have one (`graph_decoding`);
    True where it cannot apply is an error. prefill_chunk: prefill the prompt this many tokens at a time (None:
    at once).
    """
    if graph not in (True, False, "auto"):
        raise UsageError(f"graph={graph!r}: must be true, false or auto")
    if prompt.dim() == 1:
        prompt = prompt.unsqueeze(0)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise UsageError(f"the prompt must hold at least one token (got shape {tuple(prompt.shape)})")
    if max_new_tokens < 0:
        raise UsageError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                      or prefill_chunk < 1):
        raise UsageError(f"prefill_chunk={prefill_chunk!r}: must be a positive number of tokens (or None: at once)")
    if prefill_chunk is not None and not use_cache:
        raise UsageError("prefill_chunk needs use_cache=true (the chunks go through the decoding cache)")
    limit = model.config.max_seq_len
    if prompt.shape[1] + max_new_tokens > limit:
        raise UsageError(f"prompt ({prompt.shape[1]} tokens) + max_new_tokens={max_new_tokens} exceeds the model's "
                         f"max_seq_len={limit}; shorten the prompt or ask for fewer tokens")
    device = prompt.device
    capable = getattr(model, "graph_decoding", False)  # a static cache: the native Transformer, not model=hf
    if graph is True and (device.type != "cuda" or not use_cache or not capable):
        raise UsageError("graph=true needs a CUDA model with a static decoding cache (the native Transformer, not "
                         "model=hf) and use_cache=true; use graph=auto")
    graphed = use_cache and capable and device.type == "cuda" and graph is not False
    was_training = model.training
    model.eval()
    try:
        _sync(device)
        start = time.perf_counter()
        if not use_cache:
            cache = None
        else:  # static (sized for prompt + new tokens) for a graph; a model without graph_decoding takes no size
            cache = model.new_cache(prompt.shape[1] + max_new_tokens) if graphed else model.new_cache()
        chunk = prefill_chunk or prompt.shape[1]
        for at in range(0, prompt.shape[1], chunk):  # the first chunk fills the cache, the others extend it
            logits = model(prompt[:, at:at + chunk], cache)
        step = GraphStep(model, cache) if graphed else (lambda new: model(new, cache))
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
                logits = step(nxt.unsqueeze(1)) if use_cache else model(tokens)
        _sync(device)
        decode_s = time.perf_counter() - start
    finally:
        model.train(was_training)
    return Generation(tokens=tokens, prompt_len=prompt.shape[1], new_tokens=new, prefill_s=prefill_s,
                      decode_s=decode_s, cache_bytes=cache.nbytes() if cache is not None else 0)
