"""Where a run keeps its checkpoints, when it writes them, and which one `resume=auto` continues.

A checkpoint of step k (k optimizer steps done) is written at the START of batch k + 1, after step k's
metrics and validation are logged, so a run killed at any moment resumes with no gap and no repeated step
in its MLflow history. Names are `step-NNNNNN.ckpt` (files, or directories for sharded FSDP checkpoints).

Each is written under a temporary name beside it and renamed when complete (`atomic_io`), so a kill mid-write
leaves no partial `step-*.ckpt`; `resume=auto` still opens each candidate (newest first) and skips one that does
not load, with a warning, for the previous one.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import lightning as L

from mta_lab.train.atomic_io import commit, remove_temporaries, temporary_path

STEP = re.compile(r"^step-(\d+)\.ckpt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:06d}.ckpt"


def checkpoint_step(path: str | Path) -> int | None:
    match = STEP.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    return sorted((step, p) for p in directory.iterdir() if (step := checkpoint_step(p)) is not None)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at `path` cannot be resumed (damaged, not a checkpoint, unsafe to unpickle), or None."""
    from mta_lab.eval.checkpoint import load_checkpoint_file

    path = Path(path)
    if path.is_dir():  # sharded: torch.distributed.checkpoint's index and Lightning's metadata file
        missing = [name for name in (".metadata", "meta.pt") if not (path / name).is_file()]
        if missing:
            return f"incomplete sharded checkpoint (missing {', '.join(missing)})"
        path = path / "meta.pt"
    try:
        raw = load_checkpoint_file(path, mmap=True, label=None)
    except Exception as err:  # noqa: BLE001 - any failure to open means: not usable
        return " ".join(str(err).split())
    if not isinstance(raw, dict) or "loops" not in raw:
        return "not a Lightning training checkpoint (no loop state inside)"
    return None


def latest_good_checkpoint(run_dir: str | Path, *, below: int | None = None) -> Path | None:
    """The newest checkpoint (of a step < `below`, if given) that loads; each newer damaged one is skipped with one
    warning line on stderr."""
    found = [(s, p) for s, p in list_checkpoints(run_dir) if below is None or s < below]
    damaged: list[tuple[Path, str]] = []
    chosen = None
    for _, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            chosen = path
            break
        damaged.append((path, problem))
    for path, problem in damaged:
        instead = f"resuming from {chosen.name} instead" if chosen else "no earlier checkpoint loads"
        print(f"warning: skipping damaged checkpoint {path} ({problem[:300]}); {instead}", file=sys.stderr)
    return chosen


class StepCheckpoint(L.Callback):
    """Every `every` steps and at the end; keeps the newest `keep` (a collective under FSDP: all ranks save)."""

    def __init__(self, run_dir: str | Path, *, every: int, keep: int) -> None:
        self.run_dir, self.every, self.keep = Path(run_dir), every, keep
        self._saving_at_batch_start = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Remove the temporaries that killed writes of this run left (the run lock is held: no writer is live)."""
        if trainer.is_global_zero:
            remove_temporaries(checkpoint_dir(self.run_dir))
            remove_temporaries(self.run_dir / "final")

    def _save(self, trainer: L.Trainer, *, at_batch_start: bool = False) -> None:
        path = checkpoint_path(self.run_dir, trainer.global_step)
        if trainer.ckpt_path and Path(trainer.ckpt_path).resolve() == path.resolve():
            return  # the checkpoint this run resumed from (a damaged one of the same step is rewritten)
        tmp = temporary_path(path)
        self._saving_at_batch_start = at_batch_start
        try:
            trainer.save_checkpoint(tmp, weights_only=False)
        finally:
            self._saving_at_batch_start = False
        trainer.strategy.barrier("mta-checkpoint")
        if trainer.is_global_zero:
            commit(tmp, path)
            for _, old in list_checkpoints(self.run_dir)[: -self.keep]:
                shutil.rmtree(old) if old.is_dir() else old.unlink()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every == 0:
            self._save(trainer, at_batch_start=True)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Record the loop state as Lightning's own end-of-batch checkpoints do (batch k completed but for its
        end hooks, logger step not yet advanced): Lightning's restart logic then resumes at batch k + 1 with the
        logger steps of an uninterrupted run. Saved at the start of batch k + 1, the raw state is one batch on."""
        if not self._saving_at_batch_start:
            return
        loop = checkpoint["loops"]["fit_loop"]
        for counters in (loop["epoch_loop.batch_progress"]["total"], loop["epoch_loop.batch_progress"]["current"]):
            counters["ready"] = counters["started"]
            counters["completed"] = counters["processed"] - 1
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)
