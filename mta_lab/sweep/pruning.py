"""Report the validation metric to Optuna at each validation and stop a trial its pruner gives up on.

optuna-integration's PyTorchLightningPruningCallback does not fit step-based runs: it reports at
`trainer.current_epoch`, and a run here is one long epoch, so every validation after the first would be reported at
step 0 and ignored (tests/sweep/test_sweep_pruning.py shows the step-indexed reports this one makes).
"""

from __future__ import annotations

import math

import optuna
from lightning.pytorch.callbacks import Callback

from mta_lab.critical import critical


class OptunaPruning(Callback):
    def __init__(self, trial: optuna.Trial, monitor: str = "val/loss") -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.reported: list[tuple[int, float]] = []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            return
        step = int(trainer.global_step)
        with critical():  # a signal never cuts a storage write in half
            self.trial.report(value, step)
            prune = self.trial.should_prune()
        self.reported.append((step, value))
        if prune:
            raise optuna.TrialPruned(f"pruned at step {step}: {self.monitor}={value:.4g}")
