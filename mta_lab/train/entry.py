"""Train one run from a RunConfig: data, model, Lightning trainer, MLflow run, checkpoints, final export.

Rank 0 owns the MLflow run (created, or resumed from <run dir>/mlflow_run_id). Every path the run writes is
checked before any work. A failure (NaN loss, an exception) marks the run FAILED, SIGINT / SIGTERM mark it
KILLED (tags `mta.failure_reason`, `mta.signal`), each appended to the history tag `mta.interruptions`; a run
that finishes, after a resume, drops the failure tags and keeps the history. Success logs `final/*` and FINISHED.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from mta_lab.model.accounting import count_parameters, flops_per_token
from mta_lab.quiet import quiet_third_party
from mta_lab.train.atomic_io import temporary_path, write_text_atomic
from mta_lab.train.checkpoints import (
    checkpoint_dir,
    checkpoint_problem,
    checkpoint_step,
    latest_checkpoint,
    latest_good_checkpoint,
)
from mta_lab.train.config import ConfigError, RunConfig
from mta_lab.train.init_from import prepare_init
from mta_lab.train.interrupts import TrainingInterrupted
from mta_lab.train.preflight import check_run_paths

FAILURE_TAGS = ("mta.failure_reason", "mta.signal")  # dropped when a resumed run finishes
HISTORY_TAG = "mta.interruptions"  # one line per stop: "step N: STATUS (reason)"
FINISHED_FILE = "final/metrics.json"  # the final metrics, written once the MLflow run is FINISHED


@dataclass
class TrainResult:
    run_id: str | None
    run_dir: str
    tracking_uri: str
    experiment: str
    steps: int
    metrics: dict[str, float]
    params: int
    resumed_from: str | None
    eval_failures: dict[str, str] = field(default_factory=dict)  # train.evals task -> why it failed


def config_hash(run: RunConfig) -> str:
    """Hash of what determines the result (not where it is written or tracked)."""
    d = run.to_dict()
    for key in ("name", "root", "resume", "tracking"):
        d.pop(key, None)
    d["data"].pop("cache_dir", None)
    for key in ("evals", "eval_options"):  # evaluated after training: they do not change the trained model
        d["train"].pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def curated_params(run: RunConfig, n_params: int, flops: int, total_steps: int, tokens_per_step: int) -> dict:
    m, a, o, t = run.model, run.attention, run.optim, run.train
    return {
        "model": run.model_name, "attention": run.attention_name, "data": run.data_name,
        "model.dim": m.dim, "model.n_layers": m.n_layers, "model.n_heads": m.n_heads, "model.ffn_hidden": m.hidden,
        "model.vocab_size": m.vocab_size, "model.params": n_params,
        **{f"attention.{k}": v for k, v in a.to_dict().items()},
        "optim.lr": o.lr, "optim.weight_decay": o.weight_decay, "optim.schedule": o.schedule,
        "optim.warmup_steps": o.warmup_steps, "optim.grad_clip": o.grad_clip,
        "train.seed": t.seed, "train.batch_size": t.batch_size, "train.seq_len": t.seq_len,
        "train.total_steps": total_steps, "train.tokens_per_step": tokens_per_step, "train.precision": t.precision,
        "trainer.strategy": run.trainer.strategy, "trainer.devices": run.trainer.devices,
        "trainer.num_nodes": run.trainer.num_nodes, "flops_per_token": flops, "data.kind": run.data.kind,
        **({"data.toy_n": run.data.toy_n, "data.toy_variant": run.data.toy_variant, "data.toy_l": run.data.toy_l}
           if run.data.kind == "toy" else {}),
    }


def _resolve_resume(run: RunConfig, total_steps: int) -> Path | None:
    """The checkpoint to continue, checked against the run directory and the budget before any work."""
    existing = latest_checkpoint(run.run_dir)
    if run.resume == "never":
        if existing is not None:
            raise ConfigError(
                f"run directory {run.run_dir} already holds checkpoints of an earlier run (newest: {existing.name}); "
                "continue it with resume=auto, choose another name=..., or delete the directory"
            )
        return None
    path = latest_good_checkpoint(run.run_dir) if run.resume == "auto" else Path(run.resume)
    if path is None:
        return None
    if run.resume == "auto" and (checkpoint_step(path) or 0) >= total_steps and not _finished(run.run_dir, path):
        # Killed after its last checkpoint but before it was recorded as finished: train the tail again from
        # the newest earlier checkpoint (its metrics are logged once), or from the start when there is none.
        path = latest_good_checkpoint(run.run_dir, below=total_steps)
        print(f"note: {run.run_dir} stopped after its last checkpoint, before it finished; "
              + (f"resuming from {path.name}" if path else "no earlier checkpoint: training from the start"),
              file=sys.stderr)
        if path is None:
            return None
    if not path.exists():
        raise ConfigError(f"resume={run.resume!r}: no such checkpoint; use resume=auto or a path from "
                          f"{checkpoint_dir(run.run_dir)}")
    if run.resume != "auto" and (problem := checkpoint_problem(path)) is not None:
        raise ConfigError(f"resume={run.resume!r}: this checkpoint cannot be resumed: {problem[:600]}; use "
                          f"resume=auto or another checkpoint of {checkpoint_dir(run.run_dir)}")
    step = checkpoint_step(path)
    if step is not None and step >= total_steps:
        raise ConfigError(f"resume: {path.name} is at step {step}, and the budget is {total_steps} steps: nothing "
                          "left to train; raise train.max_steps (or the token/FLOP budget) to continue")
    return path


def _prepare_tracking(run: RunConfig, resume_from: Path | None, *, bundle, params: dict):
    """Rank 0: create the MLflow run, or continue the one of the run directory when resuming (`train` has checked
    that the tracking store answers)."""
    from mlflow.tracking import MlflowClient

    from mta_lab.critical import GuardedClient
    from mta_lab.tracking.mlflow_run import RunHandle, git_sha

    uri, run_dir = run.tracking_uri, Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / "mlflow_run_id"
    temporary_path(id_file).unlink(missing_ok=True)  # what a kill during the last write left
    client = GuardedClient(MlflowClient(uri))
    previous = _recorded_run_id(client, id_file)
    if previous and resume_from is None:  # a fresh start: close the old run if it died while running
        if client.get_run(previous).info.status == "RUNNING":
            _record_stop(client, previous, "before its first checkpoint: stopped without a record (e.g. SIGKILL)")
            client.set_terminated(previous, status="KILLED")
        previous = None
    elif previous:  # a resume: a run still RUNNING was stopped without a record (SIGKILL, a crash, a lost node)
        if client.get_run(previous).info.status == "RUNNING":
            _record_stop(client, previous, f"after {resume_from.name}: stopped without a record (e.g. SIGKILL)")
    _close_orphans(client, run, run_dir, keep=previous)
    tags = {
        "mta.variant": run.attention_name, "mta.size": run.model_name, "mta.seed": run.train.seed,
        "mta.sweep": "none", "mta.trial": "none", "mta.config_hash": config_hash(run), "mta.git_sha": git_sha(),
        "mta.data_fingerprint": bundle.fingerprint, "mta.run_dir": str(run_dir.resolve()), **run.tracking.tags,
    }
    handle = RunHandle(uri, run.tracking.experiment, run_id=previous, run_name=run.tracking.run_name or run.name,
                       tags={k: str(v) for k, v in tags.items()}, parent_run_id=os.environ.get("MTA_PARENT_RUN_ID"))
    write_text_atomic(id_file, handle.run_id)  # a kill leaves the old file or the new one, never a partial id
    if previous is None:
        config_path = run_dir / "config.yaml"
        write_text_atomic(config_path, yaml.safe_dump(run.to_dict(), sort_keys=False))
        handle.log_artifact(str(config_path))
        handle.log_params(params)
    return handle


def _recorded_run_id(client, id_file: Path) -> str | None:
    """The MLflow run id kept in the run directory, None when there is none or it names no run of this store."""
    if not id_file.exists():
        return None
    run_id = id_file.read_text().strip()
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:  # e.g. the directory was moved to another tracking store
        logging.getLogger(__name__).warning("%s names run %s, which %s does not hold: starting a new MLflow run",
                                            id_file, run_id, client.tracking_uri)
        return None
    return run_id


def _close_orphans(client, run: RunConfig, run_dir: Path, *, keep: str | None) -> None:
    """Mark KILLED the RUNNING runs of this run directory other than `keep`: a kill between creating an MLflow run
    and recording its id leaves one (the run lock guarantees no other process trains into this directory)."""
    experiment = client.get_experiment_by_name(run.tracking.experiment)
    path = str(run_dir.resolve())
    if experiment is None or "'" in path:
        return
    for orphan in client.search_runs([experiment.experiment_id], max_results=100, filter_string=(
            f"tags.`mta.run_dir` = '{path}' and attributes.status = 'RUNNING'")):
        if orphan.info.run_id != keep:
            _record_stop(client, orphan.info.run_id, "stopped before its run id was recorded (e.g. SIGKILL)")
            client.set_terminated(orphan.info.run_id, status="KILLED")


def _record_stop(client, run_id: str, line: str) -> None:
    """Append one line to the run's interruption history (the newest kept when MLflow's tag limit is reached)."""
    old = client.get_run(run_id).data.tags.get(HISTORY_TAG)
    client.set_tag(run_id, HISTORY_TAG, ("\n".join(filter(None, [old, line])))[-5000:])


def _close_failed(handle, err: BaseException, step: int) -> None:
    """Mark the MLflow run KILLED (a signal) or FAILED (anything else), with the reason and the history."""
    if isinstance(err, TrainingInterrupted):
        status, reason = "KILLED", f"interrupted by {err.signal_name} at step {step}"
        handle.client.set_tag(handle.run_id, "mta.signal", err.signal_name)
    elif isinstance(err, KeyboardInterrupt | SystemExit):  # a caller's Ctrl-C (Lightning turns it into exit(1))
        status, reason = "KILLED", f"interrupted at step {step} ({type(err).__name__})"
    else:
        status, reason = "FAILED", f"{type(err).__name__}: {err}"
    _record_stop(handle.client, handle.run_id, f"step {step}: {status} ({reason})"[:1000])
    handle.finish(status, reason)


def _clear_failure(handle) -> None:
    tags = handle.client.get_run(handle.run_id).data.tags
    for key in FAILURE_TAGS:
        if key in tags:
            handle.client.delete_tag(handle.run_id, key)


def _finished(run_dir: str | Path, checkpoint: Path) -> bool:
    """The run recorded its end at the step of `checkpoint` (final/metrics.json, written after FINISHED)."""
    path = Path(run_dir) / FINISHED_FILE
    try:
        return json.loads(path.read_text()).get("final/steps") == checkpoint_step(checkpoint)
    except (OSError, ValueError, AttributeError):
        return False


def train(run: RunConfig, *, progress: bool = True, extra_callbacks: list | None = None) -> TrainResult:
    from mta_lab.data import build_data
    from mta_lab.train.strategies import resolve_accelerator

    quiet_third_party()
    # Lightning logs "Received SIGTERM" at INFO; the command says it in its one line.
    logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector").setLevel(logging.WARNING)
    run_dir = Path(run.run_dir)
    check_run_paths(run.root, run.run_dir, run.tracking_uri)
    accelerator = resolve_accelerator(run.trainer)
    world = run.trainer.devices * run.trainer.num_nodes

    # ---------------------------------------------------------------- data, budget, resume: fail before any work
    bundle = build_data(run.data, seq_len=run.train.seq_len)
    if bundle.tokenizer.vocab_size > run.model.vocab_size:
        raise ConfigError(f"model.vocab_size={run.model.vocab_size} is smaller than the tokenizer's vocabulary "
                          f"({bundle.tokenizer.vocab_size}); set model.vocab_size>={bundle.tokenizer.vocab_size}")
    if bundle.seq_len > run.model.max_seq_len:
        raise ConfigError(f"model.max_seq_len={run.model.max_seq_len} is shorter than the data's sequence length "
                          f"{bundle.seq_len}; raise model.max_seq_len or lower train.seq_len")
    tokens_per_step = run.train.batch_size * bundle.seq_len * world
    flops = flops_per_token(run.model, run.attention, bundle.seq_len)
    total_steps = run.train.total_steps(tokens_per_step, flops.train)
    n_params = count_parameters(run.model, run.attention).total
    resume_from = _resolve_resume(run, total_steps)
    init, init_tags = prepare_init(run, resume_from)  # the parent's weights, read and checked before any record
    if run.train.evals:  # every sample of train.evals generated for this model and tokenizer, before any record
        from mta_lab.train.final_evals import check_final_evals

        check_final_evals(run, bundle.tokenizer)
    if init_tags:
        run = replace(run, tracking=replace(run.tracking, tags={**init_tags, **run.tracking.tags}))

    from lightning.pytorch.utilities import rank_zero_only

    from mta_lab.tracking.mlflow_run import check_reachable
    from mta_lab.train.run_lock import RunLock

    if rank_zero_only.rank == 0:
        check_reachable(run.tracking_uri)  # an unreachable server fails before the run directory exists
    # One training per run directory, locked before any MLflow record; held until this function returns.
    lock = RunLock(run_dir).acquire() if rank_zero_only.rank == 0 else None
    try:
        return _train_locked(run, run_dir, progress=progress, extra_callbacks=extra_callbacks, bundle=bundle,
                             accelerator=accelerator, world=world, tokens_per_step=tokens_per_step, flops=flops,
                             total_steps=total_steps, n_params=n_params, resume_from=resume_from, init=init)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(run: RunConfig, run_dir: Path, *, progress: bool, extra_callbacks: list | None, bundle,
                  accelerator: str, world: int, tokens_per_step: int, flops, total_steps: int, n_params: int,
                  resume_from: Path | None, init=None) -> TrainResult:
    from lightning.pytorch.utilities import rank_zero_only

    handle = None
    if rank_zero_only.rank == 0:
        params = curated_params(run, n_params, flops.train, total_steps, tokens_per_step)
        handle = _prepare_tracking(run, resume_from, bundle=bundle, params=params)
    trainer = None
    try:  # from here on the MLflow run exists: whatever stops the run closes it, with the reason
        trainer, task, datamodule, throughput = _build_trainer(
            run, bundle, handle, accelerator=accelerator, world=world, total_steps=total_steps,
            tokens_per_step=tokens_per_step, flops=flops, progress=progress, extra_callbacks=extra_callbacks,
            init=init)
        started = time.time()
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                    weights_only=True)
        if trainer.interrupted:
            raise TrainingInterrupted(signal.SIGINT)
        final = _final_metrics(trainer, throughput, n_params=n_params, flops=flops.train, started=started)
        if handle is not None:
            # Metric steps follow Lightning's index of the optimizer step (0-based): the last step is N - 1.
            handle.log_metrics(final, trainer.global_step - 1, int(time.time() * 1000), force=True)
            _clear_failure(handle)
            handle.finish("FINISHED")
            write_text_atomic(run_dir / FINISHED_FILE, json.dumps(final, indent=1, sort_keys=True) + "\n")
    except BaseException as err:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        step = trainer.global_step if trainer is not None else 0
        if isinstance(err, SIGTERMException):  # Lightning's own SIGTERM path (a rank it signalled)
            err = TrainingInterrupted(signal.SIGTERM)
        if isinstance(err, TrainingInterrupted):
            err.step, err.run_id = step, handle.run_id if handle is not None else None
        if handle is not None:
            _close_failed(handle, err, step)
        if isinstance(err, TrainingInterrupted):
            raise err from None
        raise
    eval_failures: dict[str, str] = {}
    if handle is not None and run.train.evals:  # the run is FINISHED: an eval's failure is a tag, not a lost run
        from mta_lab.train.final_evals import run_final_evals

        eval_metrics, eval_failures = run_final_evals(run, run_dir, handle.client, handle.run_id)
        final = {**final, **eval_metrics}
    return TrainResult(run_id=handle.run_id if handle else None, run_dir=str(run_dir), tracking_uri=run.tracking_uri,
                       experiment=run.tracking.experiment, steps=trainer.global_step, metrics=final,
                       params=n_params, resumed_from=str(resume_from) if resume_from else None,
                       eval_failures=eval_failures)


def _final_metrics(trainer, throughput, *, n_params: int, flops: int, started: float) -> dict[str, float]:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    final = {
        "final/train_loss": metrics.get("train/loss"), "final/val_loss": metrics.get("val/loss"),
        "final/val_ppl": metrics.get("val/ppl"), "final/val_error_rate": metrics.get("val/error_rate"),
        "final/tokens_per_s": throughput.last_tokens_per_s, "final/mfu": throughput.last_mfu,
        "final/steps": float(trainer.global_step), "final/params": float(n_params),
        "final/flops_per_token": float(flops), "final/wall_s": time.time() - started,
    }
    return {k: v for k, v in final.items() if v is not None}


def _build_trainer(run: RunConfig, bundle, handle, *, accelerator: str, world: int, total_steps: int,
                   tokens_per_step: int, flops, progress: bool, extra_callbacks: list | None, init=None):
    """The Lightning trainer, the task, the data module and the throughput meter of one run."""
    import lightning as L

    from mta_lab.tracking.lightning_logger import MLflowRunLogger
    from mta_lab.train.atomic_io import DirectCheckpointIO
    from mta_lab.train.callbacks import ResolvedBackends, Throughput, detect_peak_flops
    from mta_lab.train.checkpoints import StepCheckpoint
    from mta_lab.train.datamodule import LMDataModule
    from mta_lab.train.init_from import InitFromReport
    from mta_lab.train.module import LanguageModelTask
    from mta_lab.train.strategies import build_strategy

    run_dir = Path(run.run_dir)
    L.seed_everything(run.train.seed, workers=True, verbose=False)
    datamodule = LMDataModule(bundle, batch_size=run.train.batch_size,
                              val_batch_size=run.train.val_batch_size or run.train.batch_size,
                              seed=run.train.seed, total_steps=total_steps, val_batches=run.train.val_batches)
    task = LanguageModelTask(
        run.model, run.attention, run.optim, total_steps=total_steps, tokens_per_step=tokens_per_step,
        train_flops_per_token=flops.train, val_domains=datamodule.val_domains, toy_eval=run.data.kind == "toy",
        compile_model=run.train.compile, activation_checkpointing=run.train.activation_checkpointing,
        export_path=str(run_dir / "final" / "model.pt"), export_extra={"data": run.data.to_dict()},
        initialise=init.load_into if init is not None else None,
    )
    precision = run.train.precision
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    throughput = Throughput(tokens_per_step=tokens_per_step, train_flops_per_token=flops.train,
                            peak_flops=run.train.peak_flops or detect_peak_flops(), world_size=world,
                            every=run.train.log_every)
    checkpoints = StepCheckpoint(run_dir, every=run.train.ckpt_every, keep=run.train.keep_checkpoints)
    bar = _progress_bar() if progress else None
    trainer = L.Trainer(
        accelerator=accelerator, devices=run.trainer.devices, num_nodes=run.trainer.num_nodes,
        strategy=build_strategy(run.trainer, accelerator), precision=precision, max_steps=total_steps,
        val_check_interval=run.train.val_every, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        log_every_n_steps=run.train.log_every, logger=MLflowRunLogger(handle), enable_progress_bar=progress,
        callbacks=[throughput, checkpoints, ResolvedBackends(handle), *([bar] if bar else []),
                   *([InitFromReport(init, handle)] if init is not None else []), *(extra_callbacks or [])],
        enable_checkpointing=False, use_distributed_sampler=False, enable_model_summary=False,
        default_root_dir=str(run_dir), benchmark=False, plugins=[DirectCheckpointIO()],
    )
    return trainer, task, datamodule, throughput


def _rich_ok() -> bool:
    return os.environ.get("TERM", "") != "dumb"


def _progress_bar():
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    class StepProgressBar(RichProgressBar):
        """Lightning's rich bar, labelled by steps (runs are step-based, not epoch-based)."""

        def _get_train_description(self, current_epoch: int) -> str:
            return "train"

    return StepProgressBar() if _rich_ok() else TQDMProgressBar()
