"""Run one eval task with checked options (`options.check_options`) on an `EvalLM`: the one dispatch that
`mta-lab eval` and `train.evals` share. `preflight` runs the same generators and loaders on a model that computes
nothing, so every length, file and haystack problem is found before a training starts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.lm import EvalLM, Progress
from mta_lab.eval.results import EvalResult


def evaluate(task: str, options: dict, lm: EvalLM, tokenizer: Tokenizer, data: dict | None, *,
             progress: Progress | None = None, total: Callable[[int], None] | None = None,
             haystack=None) -> EvalResult:
    """`data`: the checkpoint's data config (the default haystack); `haystack`: one already loaded."""
    total = total or (lambda n: None)
    if task in ("niah", "babilong"):
        from mta_lab.eval.haystack import load_haystack

        need_haystack = task == "niah" or any(options["lengths"])
        if haystack is None and need_haystack:
            haystack = load_haystack(data, tokenizer, haystack=options["haystack"], cache_dir=options["cache_dir"])
        if task == "niah":
            from mta_lab.eval.niah import run_niah

            total(len(options["contexts"]) * len(options["needles"]) * len(options["depths"]) * options["samples"])
            return run_niah(lm, tokenizer, haystack, contexts=options["contexts"], needles=options["needles"],
                            depths=options["depths"], samples=options["samples"], seed=options["seed"],
                            digits=options["digits"], progress=progress)
        from mta_lab.eval.babilong import run_babilong

        total(len(options["tasks"]) * len(options["lengths"]) * options["samples"])
        return run_babilong(lm, tokenizer, haystack, tasks=options["tasks"], lengths=options["lengths"],
                            samples=options["samples"], seed=options["seed"], facts=options["facts"] or None,
                            progress=progress)
    if task == "lambada":
        from mta_lab.eval.multiple_choice import run_lambada

        return run_lambada(lm, tokenizer, options["data.path"], progress=progress)
    if task == "zeroshot":
        from mta_lab.eval.multiple_choice import run_zeroshot

        return run_zeroshot(lm, tokenizer, options["data.path"], progress=progress)
    from mta_lab.eval.harness import run_harness

    return run_harness(lm, tokenizer, tasks=options["tasks"], include_path=options["include_path"],
                       num_fewshot=options["num_fewshot"], limit=options["limit"])


class NullLM:
    """An `EvalLM` of a given context that computes nothing (empty outputs, zero log-likelihoods)."""

    def __init__(self, max_len: int, eos_id: int | None = None) -> None:
        self.max_len, self.eos_id = max_len, eos_id

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, progress=None) -> list[list[int]]:
        return [[] for _ in prompts]

    def loglikelihood(self, requests, *, progress=None) -> list[tuple[float, bool]]:
        return [(0.0, False) for _ in requests]


def preflight(task: str, options: dict, tokenizer: Tokenizer, data: dict | None, max_len: int) -> None:
    """Every sample of the task generated (or every file read) for a model of context `max_len`: an EvalError
    for a length the model cannot take, a file missing a field, a corpus the tokenizer cannot encode."""
    if task == "harness":
        from mta_lab.eval.harness import check_harness

        check_harness()
        return
    evaluate(task, options, NullLM(max_len, tokenizer.eos_id), tokenizer, data)
