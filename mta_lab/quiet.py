"""Silence library output that says nothing about the user's run (tips, INFO lines, known deprecations)."""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:  # pragma: no cover - optuna is a dependency
        pass
    for message in (r".*isinstance\(treespec, LeafSpec\).*", r".*IterableDataset. has .__len__. defined.*",
                    r".*smaller than the logging interval.*", r".*does not have many workers.*",
                    # a machine with SLURM's client installed (a login node) runs local trainings without srun
                    r".*The `srun` command is available on your system but is not used.*"):
        warnings.filterwarnings("ignore", message=message)
