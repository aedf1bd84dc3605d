"""A scripted EvalLM for the scorer tests: it answers from a table prompt -> answer text, or a fixed wrong text."""

from __future__ import annotations


class ScriptedLM:
    def __init__(self, tokenizer, answers: dict[tuple[int, ...], str] | None = None, wrong: str | None = None,
                 max_len: int = 100_000) -> None:
        self.tok, self.answers, self.wrong = tokenizer, answers or {}, wrong
        self.max_len, self.eos_id = max_len, tokenizer.eos_id
        self.calls = 0

    def greedy(self, prompts, max_new_tokens, *, progress=None):
        self.calls += 1
        out = []
        for p in prompts:
            text = self.wrong if self.wrong is not None else self.answers[tuple(p)]
            out.append(self.tok.encode(text)[:max_new_tokens])
        if progress:
            progress(len(prompts))
        return out

    def loglikelihood(self, requests, *, progress=None):
        raise NotImplementedError
