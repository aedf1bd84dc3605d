"""What the eval tasks ask of a model: greedy continuations and log-likelihoods of token ids.

`EvalLM` is the protocol (a scripted model in the tests implements it too); `TorchLM` implements it over a
trained `Transformer`:
- `greedy`: prompts grouped by exact length (no padding, so no attention mask is needed), each group in batches;
  one prefill fills the incremental cache (`mta_lab/attention/decoding.py`), then one cached step per new token
  (`mta_lab/model/generate.py`);
- `loglikelihood`: (context, continuation) pairs sorted by length, right-padded into batches (a causal model's
  logits at a position never see the padding after it); log p(continuation | context) summed over its tokens,
  and whether greedy decoding would produce it (every continuation token the argmax). A pair longer than the
  model's context keeps its last `max_len + 1` tokens (the continuation must fit).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import nn

from mta_lab.eval.errors import EvalError

Progress = Callable[[int], None]  # called with the number of samples just finished


class EvalLM(Protocol):
    max_len: int  # the longest token sequence the model takes (prompt + generated tokens)
    eos_id: int | None

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
               progress: Progress | None = None) -> list[list[int]]: ...

    def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                      progress: Progress | None = None) -> list[tuple[float, bool]]: ...


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


class TorchLM:
    def __init__(self, model: nn.Module, *, eos_id: int | None = None, batch_size: int = 8,
                 device: str | torch.device = "cpu", dtype: str = "float32") -> None:
        """dtype: the weights' for the eval ("auto": bfloat16 on CUDA, float32 on the CPU); log-likelihoods are
        always taken in float32 from the logits."""
        if batch_size < 1:
            raise EvalError(f"batch_size={batch_size}: must be a positive integer")
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.max_len = model.config.max_seq_len
        self.vocab_size = model.config.vocab_size
        self.eos_id = eos_id
        self.batch_size = batch_size

    @torch.inference_mode()
    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
               progress: Progress | None = None) -> list[list[int]]:
        """Greedy continuations of up to max_new_tokens (cut after the first EOS, which is dropped)."""
        from mta_lab.model.generate import generate

        out: list[list[int] | None] = [None] * len(prompts)
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            if not p:
                raise EvalError("a prompt of the eval is empty; every prompt needs at least one token")
            by_length[len(p)].append(i)
        for _, idx in sorted(by_length.items()):
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                batch = torch.tensor([list(prompts[i]) for i in chunk], dtype=torch.long, device=self.device)
                result = generate(self.model, batch, max_new_tokens, temperature=0.0, eos_id=self.eos_id)
                for row, i in zip(result.tokens[:, result.prompt_len:].tolist(), chunk, strict=True):
                    if self.eos_id is not None and self.eos_id in row:
                        row = row[:row.index(self.eos_id)]
                    out[i] = row
                if progress is not None:
                    progress(len(chunk))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                      progress: Progress | None = None) -> list[tuple[float, bool]]:
        rows = []
        for context, continuation in requests:
            if not continuation:
                raise EvalError("a continuation to score is empty; every answer needs at least one token")
            if len(continuation) > self.max_len:
                raise EvalError(f"a continuation of {len(continuation)} tokens does not fit the model's context "
                                f"({self.max_len} tokens)")
            full = [*context, *continuation][-(self.max_len + 1):]
            if len(full) < 2:
                raise EvalError("a (context, continuation) pair needs at least 2 tokens: give a context")
            rows.append((full, len(continuation)))
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = len(rows[chunk[0]][0]) - 1
            inputs = torch.zeros(len(chunk), width, dtype=torch.long)
            for b, i in enumerate(chunk):
                full = rows[i][0]
                inputs[b, :len(full) - 1] = torch.tensor(full[:-1])
            logits = self.model(inputs.to(self.device))
            for b, i in enumerate(chunk):
                full, n = rows[i]
                positions = torch.arange(len(full) - 1 - n, len(full) - 1, device=self.device)
                logprobs = torch.log_softmax(logits[b, positions].float(), dim=-1)
                target = torch.tensor(full[-n:], device=self.device)
                total = float(logprobs.gather(-1, target[:, None]).sum())
                results[i] = (total, bool((logprobs.argmax(-1) == target).all()))
            if progress is not None:
                progress(len(chunk))
        return results  # type: ignore[return-value]
