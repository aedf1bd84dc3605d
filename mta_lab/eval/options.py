"""The options of each eval task (defaults, usage) and their checks, shared by `mta-lab eval` and `train.evals`.

`check_options(task, options)` takes the task's defaults updated by the user's values (as YAML reads them) and
returns them checked and normalised (comma lists to lists); a bad value is one EvalError naming `key=value` and
the fix. Nothing here loads a checkpoint or a file.
"""

from __future__ import annotations

from mta_lab.eval.errors import EvalError

CKPT = "ckpt=<run dir | final/model.pt | checkpoints/*.ckpt | final/hf>"
COMMON = {"ckpt": None, "device": "auto", "dtype": "auto", "batch_size": 8, "track": "auto", "tracking_uri": None}
COMMON_USAGE = ("device=auto|cpu|cuda dtype=auto|float32|bfloat16 (auto: bfloat16 on CUDA) batch_size=8 "
                "track=auto|new|false tracking_uri=URI")
DTYPES = ("auto", "float32", "bfloat16")
LONG = {"haystack": None, "cache_dir": None, "seed": 0}
TASKS = {
    "niah": ("multi-needle needle-in-a-haystack, generated offline (accuracy per context, needles, depth)",
             {**COMMON, **LONG, "contexts": "2048,4096", "needles": "2,4,6", "depths": "0,0.25,0.5,0.75,1",
              "samples": 50, "digits": 7},
             "contexts=2048,4096 needles=2,4,6 depths=0,0.25,0.5,0.75,1 samples=50 digits=7 seed=0 haystack=PATH"),
    "babilong": ("bAbI QA1-QA5 facts spread through distractor text (accuracy per task and length)",
                 {**COMMON, **LONG, "tasks": "qa1,qa2,qa3,qa4,qa5", "lengths": "0,1024,2048,4096", "samples": 50,
                  "facts": 0},
                 "tasks=qa1,qa2,qa3,qa4,qa5 lengths=0,1024,2048,4096 samples=50 seed=0 facts=0 (0: per task, "
                 "qa1 8, qa2 10, qa3 12, qa5 8; qa4 has 2) haystack=PATH"),
    "lambada": ("LAMBADA last-word perplexity and accuracy from a local file", {**COMMON, "data.path": None},
                "data.path=FILE.jsonl (a \"text\" field per line) or FILE.txt (one passage per line)"),
    "zeroshot": ("multiple choice from local JSONL files (acc, acc_norm)", {**COMMON, "data.path": None},
                 'data.path=FILE.jsonl or DIR of *.jsonl ({"context", "choices", "gold", "fewshot"?} per line)'),
    "harness": ("lm-evaluation-harness tasks over the checkpoint (optional extra `eval`)",
                {**COMMON, "tasks": None, "include_path": None, "num_fewshot": None, "limit": None},
                "tasks=hellaswag,piqa include_path=DIR (your task YAMLs) num_fewshot=N limit=N"),
}
RAW = ("ckpt", "device", "dtype", "track", "tracking_uri", "haystack", "cache_dir", "contexts", "needles", "depths",
       "tasks", "lengths", "data.path", "include_path")
CLI_ONLY = ("ckpt", "track", "tracking_uri")  # what `train.eval_options` may not set: the run decides them


def usage(task: str) -> str:
    return f"mta-lab eval {task} {CKPT} {TASKS[task][2]} {COMMON_USAGE}"


def _text(value) -> str:
    """A YAML list ([160, 220]) or a comma string ("160,220") as the comma string."""
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _ints(key: str, text, minimum: int = 1) -> list[int]:
    try:
        values = [int(v) for v in _text(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise EvalError(f"{key}={text!r}: must be comma-separated integers, e.g. {key}=1024,2048") from None
    if not values or any(v < minimum for v in values):
        raise EvalError(f"{key}={text!r}: give integers >= {minimum}, comma-separated")
    return values


def _floats(key: str, text) -> list[float]:
    try:
        values = [float(v) for v in _text(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise EvalError(f"{key}={text!r}: must be comma-separated numbers in [0, 1], e.g. {key}=0,0.5,1") from None
    if not values or any(not 0 <= v <= 1 for v in values):
        raise EvalError(f"{key}={text!r}: depths are fractions of the context, each in [0, 1]")
    return values


def _positive(options: dict, key: str) -> None:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvalError(f"{key}={value!r}: must be a positive integer")


def check_options(task: str, options: dict, *, need_ckpt: bool = True) -> dict:
    """`options` (the task's defaults updated by the user's) checked and normalised; EvalError otherwise."""
    options = dict(options)
    full_usage = usage(task)
    if need_ckpt and not options["ckpt"]:
        raise EvalError(f"ckpt= is required; usage: {full_usage}")
    if options["device"] not in ("auto", "cpu", "cuda"):
        raise EvalError(f"device={options['device']!r}: allowed: auto, cpu, cuda")
    if options["dtype"] not in DTYPES:
        raise EvalError(f"dtype={options['dtype']!r}: allowed: {', '.join(DTYPES)} (the weights' dtype for the eval; "
                        "auto: bfloat16 on CUDA, float32 on the CPU)")
    if options["track"] not in ("auto", "new", "false"):
        raise EvalError(f"track={options['track']!r}: allowed: auto (the checkpoint's run), new (a run linked to it), "
                        "false (record nothing)")
    _positive(options, "batch_size")
    if task == "niah":
        options["contexts"] = _ints("contexts", options["contexts"])
        options["needles"] = _ints("needles", options["needles"])
        options["depths"] = _floats("depths", options["depths"])
        _positive(options, "samples")
        _positive(options, "digits")
    elif task == "babilong":
        from mta_lab.eval.babi import TASKS as QA

        names = [t for t in _text(options["tasks"]).replace(" ", "").split(",") if t]
        bad = [t for t in names if t not in QA]
        if not names or bad:
            raise EvalError(f"tasks={options['tasks']!r}: allowed: {', '.join(QA)} (comma-separated)")
        options["tasks"] = names
        options["lengths"] = _ints("lengths", options["lengths"], minimum=0)
        _positive(options, "samples")
        if isinstance(options["facts"], bool) or not isinstance(options["facts"], int) or not 0 <= options["facts"]:
            raise EvalError(f"facts={options['facts']!r}: must be an integer >= 0 (0: the task's default)")
        if 0 < options["facts"] < 2:
            raise EvalError(f"facts={options['facts']}: a story needs at least 2 facts")
    elif task in ("lambada", "zeroshot") and not options["data.path"]:
        raise EvalError(f"data.path= is required; usage: {full_usage}" if need_ckpt else
                        "data.path=None: is required (the local file to score)")
    elif task == "harness":
        if not options["tasks"]:
            raise EvalError(f"tasks= is required (lm-evaluation-harness task names); usage: {full_usage}")
        options["tasks"] = _text(options["tasks"])
        for key in ("num_fewshot", "limit"):
            if options[key] is not None and (isinstance(options[key], bool) or not isinstance(options[key], int)
                                             or options[key] < 0):
                raise EvalError(f"{key}={options[key]!r}: must be an integer >= 0")
    if task in ("niah", "babilong") and (isinstance(options["seed"], bool) or not isinstance(options["seed"], int)):
        raise EvalError(f"seed={options['seed']!r}: must be an integer")
    return options


def metric_names(task: str, options: dict) -> set[str] | None:
    """The MLflow metrics the task logs with these (checked) options; None when only the run can tell (harness,
    zeroshot: the files' names)."""
    from mta_lab.eval.results import EvalResult

    if task == "niah":
        from mta_lab.eval.niah import setting_name

        rows = [{"setting": setting_name(c, n, d), "acc": 0.0} for c in options["contexts"]
                for n in options["needles"] for d in options["depths"]]
        summary = {"acc": 0.0}
    elif task == "babilong":
        from mta_lab.eval.babilong import setting_name

        rows = [{"setting": setting_name(t, n), "acc": 0.0} for t in options["tasks"] for n in options["lengths"]]
        summary = {"acc": 0.0, **{f"acc_len{n}": 0.0 for n in options["lengths"]}}
    elif task == "lambada":
        from pathlib import Path

        rows = [{"setting": Path(options["data.path"]).stem, "ppl": 0.0, "acc": 0.0}]
        summary = {"ppl": 0.0, "acc": 0.0}
        return set(EvalResult(task, rows, summary, metric_keys=("ppl", "acc")).metrics())
    else:
        return None
    return set(EvalResult(task, rows, summary).metrics())
