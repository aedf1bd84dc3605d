"""LAMBADA and zero-shot multiple choice from local files, scored by log-likelihood.

LAMBADA (`data.path=` a JSONL file with a "text" field per line, or a text file with one passage per line): the
context is the passage up to its last space, the target " <last word>". Metrics: `ppl` = exp(−mean over passages
of log p(target | context)) (the paper's Table 4, as lm-evaluation-harness computes it) and `acc` (greedy decoding
would produce the whole target).

Zero-shot (`data.path=` a JSONL file, or a directory of *.jsonl files, one task each, named by the file's stem).
Schema, one JSON object per line:
    {"context": "Q: ... A:", "choices": [" yes", " no"], "gold": 0, "fewshot": "optional prompt prefix"}
`choices` are scored as continuations of `fewshot + context` (write leading spaces into them as the text should
read); `acc`: the choice of highest summed log-likelihood is `gold`; `acc_norm`: the same, each divided by its
length in characters (lm-evaluation-harness' acc_norm).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.errors import EvalError
from mta_lab.eval.lm import EvalLM, Progress
from mta_lab.eval.results import EvalResult, mean


def _json_lines(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EvalError(f"data.path={path}: cannot be read ({err})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalError(f"data.path={path}: line {n} is not JSON ({err.msg}); one JSON object per line") from None
        if not isinstance(row, dict):
            raise EvalError(f"data.path={path}: line {n} is not a JSON object")
        rows.append((n, row))
    if not rows:
        raise EvalError(f"data.path={path}: holds no sample")
    return rows


def load_lambada(path: str) -> list[tuple[str, str]]:
    """(context, " last word") per passage."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise EvalError(f"data.path={path}: no such file; give a LAMBADA JSONL file (a \"text\" field per line) or a "
                        "text file with one passage per line")
    if file.suffix in (".jsonl", ".json"):
        texts = []
        for n, row in _json_lines(file):
            if not isinstance(row.get("text"), str):
                raise EvalError(f"data.path={path}: line {n} has no \"text\" string field (fields: "
                                f"{', '.join(row) or 'none'}); each line needs the passage in \"text\"")
            texts.append(row["text"])
    else:
        texts = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for n, text in enumerate(texts, 1):
        context, sep, word = text.strip().rpartition(" ")
        if not sep or not word:
            raise EvalError(f"data.path={path}: passage {n} has no last word after a space")
        out.append((context, " " + word))
    return out


def run_lambada(lm: EvalLM, tokenizer: Tokenizer, path: str, *, progress: Progress | None = None) -> EvalResult:
    pairs = load_lambada(path)
    requests = [(tokenizer.encode(c), tokenizer.encode(w)) for c, w in pairs]
    scores = lm.loglikelihood(requests, progress=progress)
    logliks = [s[0] for s in scores]
    result = EvalResult("lambada", metric_keys=("ppl", "acc"), info={"path": str(path), "samples": len(pairs)})
    result.summary = {"ppl": math.exp(-mean(logliks)), "acc": mean(float(s[1]) for s in scores)}
    result.settings.append({"setting": Path(path).stem, "n": len(pairs), **result.summary})
    result.samples = [{"task": "lambada", "index": i, "prompt": c, "expected": w, "loglikelihood": ll,
                       "correct": greedy} for i, ((c, w), (ll, greedy)) in enumerate(zip(pairs, scores, strict=True))]
    return result


def zeroshot_files(path: str) -> dict[str, Path]:
    root = Path(path).expanduser()
    if root.is_dir():
        files = {f.stem: f for f in sorted(root.glob("*.jsonl"))}
        if not files:
            raise EvalError(f"data.path={path}: the directory holds no *.jsonl file")
        return files
    if not root.is_file():
        raise EvalError(f"data.path={path}: no such file or directory; give a JSONL file of "
                        '{"context", "choices", "gold"} lines, or a directory of them')
    return {root.stem: root}


def load_choices(file: Path) -> list[dict]:
    out = []
    for n, row in _json_lines(file):
        missing = [k for k in ("context", "choices", "gold") if k not in row]
        if missing:
            raise EvalError(f"data.path={file}: line {n} lacks the field {', '.join(map(repr, missing))} (schema: "
                            '{"context": str, "choices": [str, ...], "gold": int, "fewshot": optional str})')
        choices, gold = row["choices"], row["gold"]
        if not isinstance(row["context"], str) or not isinstance(choices, list) or len(choices) < 2 \
                or not all(isinstance(c, str) and c for c in choices):
            raise EvalError(f"data.path={file}: line {n}: \"context\" must be a string and \"choices\" a list of at "
                            "least 2 non-empty strings")
        if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise EvalError(f"data.path={file}: line {n}: \"gold\"={gold!r} must be the index of the right choice "
                            f"(0..{len(choices) - 1})")
        fewshot = row.get("fewshot", "")
        if not isinstance(fewshot, str):
            raise EvalError(f"data.path={file}: line {n}: \"fewshot\" must be a string (the prompt's prefix)")
        out.append({"context": fewshot + row["context"], "choices": choices, "gold": gold,
                    "fewshot": bool(fewshot)})
    return out


def run_zeroshot(lm: EvalLM, tokenizer: Tokenizer, path: str, *, progress: Progress | None = None) -> EvalResult:
    tasks = {name: load_choices(file) for name, file in zeroshot_files(path).items()}
    result = EvalResult("zeroshot", metric_keys=("acc", "acc_norm"), info={"path": str(path), "tasks": list(tasks)})
    for name, items in tasks.items():
        requests = [(tokenizer.encode(it["context"]), tokenizer.encode(c)) for it in items for c in it["choices"]]
        scores = iter(lm.loglikelihood(requests, progress=progress))
        acc, acc_norm = [], []
        for i, it in enumerate(items):
            ll = [next(scores)[0] for _ in it["choices"]]
            norm = [v / len(c) for v, c in zip(ll, it["choices"], strict=True)]
            pick, pick_norm = max(range(len(ll)), key=ll.__getitem__), max(range(len(ll)), key=norm.__getitem__)
            acc.append(float(pick == it["gold"]))
            acc_norm.append(float(pick_norm == it["gold"]))
            result.samples.append({"task": "zeroshot", "setting": name, "index": i, "prompt": it["context"],
                                   "choices": it["choices"], "expected": it["gold"], "loglikelihoods": ll,
                                   "pick": pick, "pick_norm": pick_norm, "correct": pick == it["gold"],
                                   "meta": {"fewshot": it["fewshot"]}})
        result.settings.append({"setting": name, "n": len(items), "acc": mean(acc), "acc_norm": mean(acc_norm)})
    result.summary = {"acc": mean(r["acc"] for r in result.settings),
                      "acc_norm": mean(r["acc_norm"] for r in result.settings)}
    return result
