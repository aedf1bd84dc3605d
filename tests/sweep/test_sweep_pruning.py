"""HPO pruning on a real training: val/loss reported at each validation by its step, pruned when told."""

from __future__ import annotations

import optuna
import pytest
from integration_helpers import client_for, history, tiny

from mta_lab.conf import load_run_config
from mta_lab.sweep.pruning import OptunaPruning
from mta_lab.train.entry import train


def test_a_trial_the_pruner_gives_up_on_stops_at_its_first_validation(tmp_path, data_cache):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss is "too high"
    trial = study.ask()
    config = load_run_config(tiny(tmp_path, "pruned", data_cache, max_steps=20, val_every=5))
    with pytest.raises(optuna.TrialPruned):
        train(config, progress=False, extra_callbacks=[OptunaPruning(trial, "val/loss")])
    assert list(study.trials[0].intermediate_values) == [5]  # reported once, at the first validation (step 5)
    run_id = (tmp_path / "pruned" / "mlflow_run_id").read_text().strip()
    client = client_for(config.tracking_uri)
    assert max(step for step, _ in history(client, run_id, "train/loss")) < 19  # stopped early


def test_a_trial_under_the_threshold_trains_to_the_end(tmp_path, data_cache):
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=100.0))
    trial = study.ask()
    config = load_run_config(tiny(tmp_path, "kept", data_cache, max_steps=10, val_every=5))
    result = train(config, progress=False, extra_callbacks=[OptunaPruning(trial, "val/loss")])
    assert result.steps == 10 and list(study.trials[0].intermediate_values) == [5, 10]
