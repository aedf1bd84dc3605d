"""Multi-needle needle-in-a-haystack (paper Figures 3 and 8), generated offline.

A prompt of exactly `context` tokens (the checkpoint's own tokens) is: haystack lines, with `needles` needle lines
"The magic number of <city> is <number>." inserted between lines, then the question
"What is the magic number of <city>? The magic number of <city> is"; the model answers by greedy decoding (the
incremental cache) and scores when its output starts with the number (`results.exact_match`). The asked needle
sits at `depth` (0: before the first haystack token, 1: right before the question; the nearest line boundary, the
achieved depth is recorded); the other needles at uniformly random depths, the order of needles sharing a
boundary shuffled. Cities are distinct within a sample, numbers are `digits`-digit and distinct. Sample `i` of a
setting comes from its own seed (seed, context, needles, depth, i): settings never share random draws and any
sample can be regenerated alone. Accuracy per (context, needles, depth); the summary is the mean over settings.
Needles are unlike training text by construction: the embedded corpus never says "magic number" (tested).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.errors import EvalError
from mta_lab.eval.haystack import Haystack
from mta_lab.eval.lm import EvalLM, Progress
from mta_lab.eval.results import EvalResult, exact_match, mean

CITIES = (
    "Tokyo", "Nairobi", "Lima", "Oslo", "Hanoi", "Bogota", "Dakar", "Seoul", "Quito", "Perth", "Lagos", "Manila",
    "Helsinki", "Santiago", "Karachi", "Montreal", "Istanbul", "Jakarta", "Reykjavik", "Chicago", "Mumbai",
    "Caracas", "Sydney", "Toronto", "Havana", "Kampala", "Beijing", "Tbilisi", "Denver", "Houston", "Lisbon",
    "Dublin", "Warsaw", "Prague", "Budapest", "Sofia", "Riga", "Vilnius", "Tallinn", "Zagreb", "Ankara", "Tehran",
    "Baghdad", "Riyadh", "Doha", "Dubai", "Muscat", "Kabul", "Dhaka", "Colombo", "Bangkok", "Yangon", "Taipei",
    "Osaka", "Busan", "Auckland", "Honolulu", "Phoenix", "Seattle", "Boston", "Atlanta", "Miami", "Dallas",
    "Calgary", "Ottawa", "Winnipeg", "Monterrey", "Guadalajara", "Medellin", "Cordoba", "Montevideo", "Asuncion",
)
DEFAULTS = {"contexts": (2048, 4096), "needles": (2, 4, 6), "depths": (0.0, 0.25, 0.5, 0.75, 1.0), "samples": 50,
            "seed": 0, "digits": 7}


def needle_text(city: str, number: str) -> str:
    return f"The magic number of {city} is {number}.\n"


def question_text(city: str) -> str:
    return f"\nWhat is the magic number of {city}? The magic number of {city} is"


def setting_name(context: int, needles: int, depth: float) -> str:
    return f"c{context}_n{needles}_d{depth:g}"


def make_sample(haystack: Haystack, tokenizer: Tokenizer, *, context: int, needles: int, depth: float, index: int,
                seed: int = 0, digits: int = 7) -> dict:
    """One prompt of exactly `context` tokens; "prompt_ids", "answer" and the metadata of every needle."""
    rng = np.random.default_rng([seed, context, needles, round(depth * 10_000), index])
    cities = [CITIES[i] for i in rng.choice(len(CITIES), size=needles, replace=False)]
    numbers: list[str] = []
    while len(numbers) < needles:
        n = str(int(rng.integers(10 ** (digits - 1), 10**digits)))
        if n not in numbers:
            numbers.append(n)
    asked = int(rng.integers(needles))
    needle_ids = [tokenizer.encode(needle_text(c, n)) for c, n in zip(cities, numbers, strict=True)]
    question_ids = tokenizer.encode(question_text(cities[asked]))
    filler_len = context - sum(map(len, needle_ids)) - len(question_ids)
    if filler_len < 0:
        raise EvalError(f"contexts={context}: too short for {needles} needles and the question "
                        f"({context - filler_len} tokens); use a longer context or fewer needles")
    lines = haystack.filler(filler_len, rng)
    bounds = np.cumsum([0] + [len(line) for line in lines])  # token offsets of the line boundaries

    def snap(target: float) -> int:  # index of the boundary nearest to `target` filler tokens
        j = bisect.bisect_left(bounds.tolist(), target)
        return min((k for k in (j - 1, j) if 0 <= k < len(bounds)), key=lambda k: abs(bounds[k] - target))

    at = [snap(depth * filler_len) if i == asked else snap(rng.uniform(0, filler_len)) for i in range(needles)]
    order = rng.permutation(needles)  # shuffles needles that share a boundary
    inserts = sorted(range(needles), key=lambda i: (at[i], int(np.where(order == i)[0][0])))
    ids: list[int] = []
    meta = [None] * needles
    k = 0
    for line_idx in range(len(lines) + 1):
        while k < len(inserts) and at[inserts[k]] == line_idx:
            i = inserts[k]
            meta[i] = {"city": cities[i], "number": numbers[i], "position": len(ids), "asked": i == asked,
                       "depth": float(bounds[line_idx] / filler_len) if filler_len else 0.0,
                       "filler_before": int(bounds[line_idx])}
            ids.extend(needle_ids[i])
            k += 1
        if line_idx < len(lines):
            ids.extend(lines[line_idx])
    ids.extend(question_ids)
    assert len(ids) == context
    return {"setting": setting_name(context, needles, depth), "context": context, "needles": needles,
            "depth": depth, "index": index, "prompt_ids": ids, "answer": numbers[asked],
            "asked_city": cities[asked], "needle_meta": meta, "question": question_text(cities[asked])}


def answer_tokens(tokenizer: Tokenizer, digits: int) -> int:
    """New tokens to decode: the answer with its leading space and the period after it."""
    return len(tokenizer.encode(" " + "9" * digits + ".")) + 1


def check_settings(contexts: Sequence[int], needles: Sequence[int], max_len: int, new_tokens: int) -> None:
    for c in contexts:
        if c + new_tokens > max_len:
            raise EvalError(f"contexts={c}: the checkpoint's context is {max_len} tokens (model.max_seq_len), which "
                            f"must hold the prompt and {new_tokens} answer tokens; use contexts={max_len - new_tokens}"
                            " or less, or a checkpoint trained for a longer context")
    if max(needles) > len(CITIES):
        raise EvalError(f"needles={max(needles)}: at most {len(CITIES)} needles (one city each)")


def run_niah(lm: EvalLM, tokenizer: Tokenizer, haystack: Haystack, *, contexts: Sequence[int],
             needles: Sequence[int], depths: Sequence[float], samples: int, seed: int = 0, digits: int = 7,
             progress: Progress | None = None) -> EvalResult:
    new_tokens = answer_tokens(tokenizer, digits)
    check_settings(contexts, needles, lm.max_len, new_tokens)
    items = [make_sample(haystack, tokenizer, context=c, needles=n, depth=d, index=i, seed=seed, digits=digits)
             for c in contexts for n in needles for d in depths for i in range(samples)]
    outputs = lm.greedy([s["prompt_ids"] for s in items], new_tokens, progress=progress)
    result = EvalResult("niah", info={"haystack": haystack.source, "contexts": list(contexts),
                                      "needles": list(needles), "depths": list(depths), "samples": samples,
                                      "seed": seed, "digits": digits, "max_new_tokens": new_tokens})
    by_setting: dict[str, list[bool]] = {}
    for s, out in zip(items, outputs, strict=True):
        text = tokenizer.decode(out)
        correct = exact_match(text, s["answer"])
        by_setting.setdefault(s["setting"], []).append(correct)
        result.samples.append({"task": "niah", "setting": s["setting"], "index": s["index"],
                               "prompt": tokenizer.decode(s["prompt_ids"]), "prompt_tokens": len(s["prompt_ids"]),
                               "expected": s["answer"], "output": text, "correct": correct,
                               "meta": {"context": s["context"], "needles": s["needles"], "depth": s["depth"],
                                        "asked_city": s["asked_city"], "needle_meta": s["needle_meta"]}})
    for c in contexts:
        for n in needles:
            for d in depths:
                name = setting_name(c, n, d)
                result.settings.append({"setting": name, "context": c, "needles": n, "depth": d,
                                        "n": len(by_setting[name]), "acc": mean(by_setting[name])})
    result.summary["acc"] = mean(row["acc"] for row in result.settings)
    return result
