"""`train.evals`: eval tasks run on the final model at the end of a training run, into the run's MLflow run.

`check_final_evals` runs before any run directory or MLflow record exists: every task's samples are generated (or
its files read) for the model's context with the run's tokenizer (`mta_lab.eval.run.preflight`), so a length the
model cannot take, a missing file or a haystack the tokenizer cannot encode fails the command, not the end of the
training. `run_final_evals` runs after the run is FINISHED (and `final/metrics.json` written), on rank 0: it loads
`final/model.pt` as `mta-lab eval` would, runs each task and logs it (`mta_lab.eval.tracking.record`) as
`eval/<task>/<setting>/<metric>` at the final step. A task that fails does not undo the training: its message goes
to the tag `mta.eval_failed` (the run stays FINISHED; the other tasks still run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mta_lab.train.config import ConfigError, RunConfig

EVAL_FAILED_TAG = "mta.eval_failed"


def check_final_evals(run: RunConfig, tokenizer) -> None:
    from mta_lab.eval.errors import EvalError
    from mta_lab.eval.run import preflight

    for task in run.train.evals:
        options = run.train.checked_eval_options(task)
        try:
            preflight(task, options, tokenizer, run.data.to_dict(), run.model.max_seq_len)
        except EvalError as err:
            raise ConfigError(f"train.evals: {task} cannot run on this model: {err} (set it in "
                              f"train.eval_options.{task})") from None


def run_final_evals(run: RunConfig, run_dir: Path, client, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
    """(eval metrics logged, {task: failure message}) for the tasks of `run.train.evals`."""
    from mta_lab.eval.checkpoint import load_model
    from mta_lab.eval.lm import TorchLM
    from mta_lab.eval.run import evaluate
    from mta_lab.eval.tokenizer import checkpoint_tokenizer
    from mta_lab.eval.tracking import Target, record

    if EVAL_FAILED_TAG in client.get_run(run_id).data.tags:  # an earlier attempt's failure
        client.delete_tag(run_id, EVAL_FAILED_TAG)
    ckpt = str(run_dir / "final" / "model.pt")
    target = Target(run.tracking_uri, run_id, run.tracking.experiment, run_dir)
    metrics: dict[str, float] = {}
    failures: dict[str, str] = {}
    model = payload = None
    for task in run.train.evals:
        started = time.perf_counter()
        try:
            options = run.train.checked_eval_options(task)
            if model is None:
                model, payload = load_model(ckpt)
            tokenizer = checkpoint_tokenizer(payload, ckpt, model.config.vocab_size)
            device = options["device"]
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            lm = TorchLM(model, eos_id=tokenizer.eos_id, batch_size=options["batch_size"], device=device,
                       dtype=options["dtype"])
            result = evaluate(task, options, lm, tokenizer, payload.get("data"))
            elapsed = time.perf_counter() - started
            result.info |= {"ckpt": ckpt, "step": payload.get("step"), "device": device,
                            "dtype": str(lm.dtype).removeprefix("torch."), "seconds": elapsed,
                            "samples_per_s": len(result.samples) / elapsed if elapsed > 0 else float("nan"),
                            "from": "train.evals"}
            record([result], target, "auto", ckpt=ckpt, step=payload.get("step"))
        except Exception as err:  # noqa: BLE001 - the training is done and kept; the eval's failure is recorded
            failures[task] = f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000]
            print(f"eval {task} failed (the training run stays FINISHED): {failures[task]}", file=sys.stderr)
            client.set_tag(run_id, EVAL_FAILED_TAG, "\n".join(f"{t}: {m}" for t, m in failures.items())[:5000])
            continue
        except BaseException:  # Ctrl-C / SIGTERM during an eval: the training stays FINISHED, the stop is recorded
            client.set_tag(run_id, EVAL_FAILED_TAG, f"{task}: interrupted during the eval")
            raise
        metrics |= result.metrics()
        summary = ", ".join(f"{k} = {v:.4f}" for k, v in result.summary.items())
        print(f"eval {task}: {summary} ({len(result.samples)} samples in {elapsed:.1f}s on {device})",
              file=sys.stderr)
    return metrics, failures
