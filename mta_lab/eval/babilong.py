"""BabiLong-style QA (paper Figure 5 left, Figure 7): bAbI QA1-QA5 facts spread through distractor text.

For `length` 0 the prompt is the story's fact lines, then "\nQuestion: <q>\nAnswer:"; for `length` L > 0 the
prompt is exactly L tokens: haystack lines (`haystack.py`) with the facts inserted in story order at random line
boundaries. The model answers by greedy decoding; a sample scores when its first word is the answer
(`results.exact_match`). Sample `i` of (task, length) comes from the seed (seed, task, length, i). Accuracy per
task and length; the summary is the mean over settings, and `acc_<length>` the mean over tasks at one length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.babi import TASKS, make_story
from mta_lab.eval.errors import EvalError
from mta_lab.eval.haystack import Haystack
from mta_lab.eval.lm import EvalLM, Progress
from mta_lab.eval.results import EvalResult, exact_match, mean

DEFAULTS = {"tasks": TASKS, "lengths": (0, 1024, 2048, 4096), "samples": 50, "seed": 0}
NEW_TOKENS = 12  # enough for " bathroom." in bytes


def setting_name(task: str, length: int) -> str:
    return f"{task}_len{length}"


def make_sample(haystack: Haystack | None, tokenizer: Tokenizer, *, task: str, length: int, index: int,
                seed: int = 0, facts: int | None = None) -> dict:
    """`facts`: facts per story (None: the task's default, `babi.FACTS`; qa4 always has 2)."""
    rng = np.random.default_rng([seed, TASKS.index(task), length, index])
    story = make_story(task, rng, facts)
    fact_ids = [tokenizer.encode(f + "\n") for f in story.facts]
    question_ids = tokenizer.encode(f"\nQuestion: {story.question}\nAnswer:")
    story_len = sum(map(len, fact_ids)) + len(question_ids)
    if length and story_len > length:
        raise EvalError(f"lengths={length}: a {task} story takes {story_len} tokens with its question; use lengths= "
                        "of at least that (or 0 for no distractor text)")
    lines = haystack.filler(length - story_len, rng) if length else []
    slots = sorted(int(x) for x in rng.integers(0, len(lines) + 1, size=len(fact_ids)))
    ids: list[int] = []
    positions: list[int] = []
    k = 0
    for line_idx in range(len(lines) + 1):
        while k < len(slots) and slots[k] == line_idx:
            positions.append(len(ids))
            ids.extend(fact_ids[k])
            k += 1
        if line_idx < len(lines):
            ids.extend(lines[line_idx])
    ids.extend(question_ids)
    assert not length or len(ids) == length
    return {"setting": setting_name(task, length), "task": task, "length": length, "index": index,
            "prompt_ids": ids, "answer": story.answer, "facts": story.facts, "question": story.question,
            "supporting": story.supporting, "fact_positions": positions}


def check_lengths(lengths: Sequence[int], max_len: int) -> None:
    for length in lengths:
        if length + NEW_TOKENS > max_len:
            raise EvalError(f"lengths={length}: the checkpoint's context is {max_len} tokens (model.max_seq_len), "
                            f"which must hold the prompt and {NEW_TOKENS} answer tokens; use lengths="
                            f"{max_len - NEW_TOKENS} or less, or a checkpoint trained for a longer context")


def run_babilong(lm: EvalLM, tokenizer: Tokenizer, haystack: Haystack | None, *, tasks: Sequence[str],
                 lengths: Sequence[int], samples: int, seed: int = 0, facts: int | None = None,
                 progress: Progress | None = None) -> EvalResult:
    check_lengths(lengths, lm.max_len)
    items = [make_sample(haystack, tokenizer, task=t, length=n, index=i, seed=seed, facts=facts)
             for t in tasks for n in lengths for i in range(samples)]
    too_long = [s for s in items if len(s["prompt_ids"]) + NEW_TOKENS > lm.max_len]
    if too_long:
        raise EvalError(f"lengths=0: a {too_long[0]['task']} story takes {len(too_long[0]['prompt_ids'])} tokens, "
                        f"more than the checkpoint's context ({lm.max_len}) leaves")
    outputs = lm.greedy([s["prompt_ids"] for s in items], NEW_TOKENS, progress=progress)
    result = EvalResult("babilong", info={"haystack": haystack.source if haystack else None, "tasks": list(tasks),
                                          "lengths": list(lengths), "samples": samples, "seed": seed,
                                          "facts": facts})
    by_setting: dict[str, list[bool]] = {}
    for s, out in zip(items, outputs, strict=True):
        text = tokenizer.decode(out)
        correct = exact_match(text, s["answer"])
        by_setting.setdefault(s["setting"], []).append(correct)
        result.samples.append({"task": "babilong", "setting": s["setting"], "index": s["index"],
                               "prompt": tokenizer.decode(s["prompt_ids"]), "prompt_tokens": len(s["prompt_ids"]),
                               "expected": s["answer"], "output": text, "correct": correct,
                               "meta": {"qa": s["task"], "length": s["length"], "facts": s["facts"],
                                        "question": s["question"], "supporting": s["supporting"],
                                        "fact_positions": s["fact_positions"]}})
    for t in tasks:
        for n in lengths:
            name = setting_name(t, n)
            result.settings.append({"setting": name, "qa": t, "length": n, "n": len(by_setting[name]),
                                    "acc": mean(by_setting[name])})
    result.summary["acc"] = mean(row["acc"] for row in result.settings)
    for n in lengths:
        result.summary[f"acc_len{n}"] = mean(row["acc"] for row in result.settings if row["length"] == n)
    return result
