"""An EleutherAI lm-evaluation-harness adapter (the optional extra `eval`: `pip install "mta-lab[eval]"`).

`HarnessLM` is an `lm_eval.api.model.LM` over an `EvalLM` and the checkpoint's tokenizer:
- `loglikelihood`: (context, continuation) strings -> (log p, is greedy), through `EvalLM.loglikelihood`;
- `loglikelihood_rolling`: a whole text's log-likelihood, in disjoint windows of the model's context (each window
  after the first is scored with the preceding `max_len - window` tokens as context, the harness' rolling scheme
  with no overlap beyond the context);
- `generate_until`: greedy decoding (the incremental cache) cut at the first stop string.
`run_harness` runs `lm_eval.simple_evaluate` on task names (built-in ones need their datasets available; tasks of
your own: YAML files under `include_path=`, e.g. `dataset_path: json` with `dataset_kwargs.data_files` local).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mta_lab.data.tokenizers import Tokenizer
from mta_lab.eval.errors import EvalError
from mta_lab.eval.lm import EvalLM
from mta_lab.eval.results import EvalResult


def check_harness() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise EvalError('eval harness needs lm-evaluation-harness: pip install "mta-lab[eval]" (lm_eval==0.4.13)') \
            from None


def harness_lm(lm: EvalLM, tokenizer: Tokenizer):
    from lm_eval.api.model import LM

    class HarnessLM(LM):
        def __init__(self) -> None:
            super().__init__()
            self.lm, self.tok = lm, tokenizer

        def _encode(self, text: str) -> list[int]:
            return self.tok.encode(text)

        def loglikelihood(self, requests) -> list[tuple[float, bool]]:
            pairs = []
            for req in requests:
                context, continuation = req.args
                ctx = self._encode(context) if context else [self.tok.eos_id]
                pairs.append((ctx, self._encode(continuation)))
            return self.lm.loglikelihood(pairs)

        def loglikelihood_rolling(self, requests) -> list[float]:
            out = []
            for req in requests:
                ids = self._encode(req.args[0])
                window = self.lm.max_len
                pairs = []
                for start in range(0, len(ids), window):
                    context = ids[max(0, start - window):start] or [self.tok.eos_id]
                    pairs.append((context, ids[start:start + window]))
                out.append(sum(ll for ll, _ in self.lm.loglikelihood(pairs)) if pairs else 0.0)
            return out

        def generate_until(self, requests) -> list[str]:
            out = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_new = int(kwargs.get("max_gen_toks", 64))
                ids = self._encode(context)[-(self.lm.max_len - max_new):] or [self.tok.eos_id]
                text = self.tok.decode(self.lm.greedy([ids], max_new)[0])
                cut = min((text.find(s) for s in until if s and s in text), default=-1)
                out.append(text[:cut] if cut >= 0 else text)
            return out

    return HarnessLM()


def _metric_name(key: str) -> str | None:
    name, _, flt = key.partition(",")
    if name == "alias" or name.endswith("_stderr"):
        return None
    return name if flt in ("", "none") else f"{name}_{flt}"


def run_harness(lm: EvalLM, tokenizer: Tokenizer, *, tasks: str | Sequence[str], include_path: str | None = None,
                num_fewshot: int | None = None, limit: int | None = None) -> EvalResult:
    check_harness()
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = [t for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t]
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        raise EvalError(f"tasks={','.join(names)}: lm-evaluation-harness knows no task {', '.join(unknown)}; check "
                        "the name, or give include_path= the folder of your task YAMLs")
    out = lm_eval.simple_evaluate(model=harness_lm(lm, tokenizer), tasks=names, num_fewshot=num_fewshot,
                                  limit=limit, task_manager=manager, log_samples=True)
    result = EvalResult("harness", info={"tasks": names, "include_path": include_path, "num_fewshot": num_fewshot,
                                         "limit": limit})
    keys: list[str] = []
    for task, metrics in out["results"].items():
        row = {"setting": task}
        for key, value in metrics.items():
            name = _metric_name(key)
            if name is not None and isinstance(value, int | float) and math.isfinite(value):
                row[name] = float(value)
                keys.append(name)
        result.settings.append(row)
        for sample in out.get("samples", {}).get(task, []):
            result.samples.append({"task": "harness", "setting": task, "doc_id": sample.get("doc_id"),
                                   "target": str(sample.get("target")),
                                   "arguments": [list(map(str, a)) for a in sample.get("arguments", [])],
                                   "resps": str(sample.get("filtered_resps"))})
    result.metric_keys = tuple(dict.fromkeys(keys))
    for key in result.metric_keys:
        values = [row[key] for row in result.settings if key in row]
        result.summary[key] = sum(values) / len(values)
    return result
