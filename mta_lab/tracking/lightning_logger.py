"""A Lightning logger that writes through a RunHandle (rank 0 only)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from mta_lab.tracking.mlflow_run import RunHandle


class MLflowRunLogger(Logger):
    def __init__(self, handle: RunHandle | None) -> None:
        super().__init__()
        self.handle = handle  # None on ranks other than 0

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.handle.run_id if self.handle else "none"

    @property
    @rank_zero_experiment
    def experiment(self) -> RunHandle | None:
        return self.handle

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.handle is None or step is None:
            return
        clean = {k.replace("@", "_"): float(v) for k, v in metrics.items() if k != "epoch"}
        self.handle.log_metrics(clean, step, int(time.time() * 1000))

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are curated and logged by the entry point, not dumped from hparams."""
