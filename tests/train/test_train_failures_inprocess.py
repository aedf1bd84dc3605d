"""In-process failure and restart paths: a diverging run is recorded FAILED with its reason; resuming or restarting
a run directory keeps the MLflow history and the checkpoints consistent."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from integration_helpers import client_for, history, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.errors import TrainingDiverged
from mta_lab.train.checkpoints import latest_checkpoint
from mta_lab.train.config import ConfigError
from mta_lab.train.entry import config_hash, train


class PoisonWeightAt(L.Callback):
    """Fills one weight with NaN just before the optimizer step `step` (0-based) runs its forward pass."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.layers[0].attn.wq.weight.fill_(float("nan"))


class CtrlCAt(L.Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does without the CLI's handler) before step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_nan_weight_raises_training_diverged_and_marks_run_failed(tmp_path, data_cache):
    config = load_run_config(tiny(tmp_path, "diverge", data_cache, max_steps=20))
    with pytest.raises(TrainingDiverged, match="nan"):
        train(config, progress=False, extra_callbacks=[PoisonWeightAt(3)])

    run_id = (tmp_path / "diverge" / "mlflow_run_id").read_text().strip()
    client = client_for(config.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    reason = run.data.tags["mta.failure_reason"]
    assert "nan" in reason.lower() and "TrainingDiverged" in reason
    assert not any(k.startswith("final/") for k in run.data.metrics)  # no summary of a failed run
    assert len(steps_of(history(client, run_id, "train/loss"))) == 3  # the steps before the poisoned one
    assert not (tmp_path / "diverge" / "final" / "model.pt").exists()


def _finished_run(tmp_path, data_cache, steps: int = 10, **train_settings):
    base = tiny(tmp_path, "run", data_cache, max_steps=steps, **train_settings)
    result = train(load_run_config(base), progress=False)
    return base, result


def test_resume_after_a_finished_run_keeps_every_step(tmp_path, data_cache):
    base, first = _finished_run(tmp_path, data_cache, steps=10)
    resumed = train(load_run_config([*base, "resume=auto", "train.max_steps=20"]), progress=False)
    assert resumed.run_id == first.run_id and resumed.steps == 20
    assert resumed.resumed_from.endswith("step-000010.ckpt")
    steps = steps_of(history(client_for(resumed.tracking_uri), resumed.run_id, "train/loss"))
    assert steps == list(range(steps[0], steps[0] + 20))


def test_resume_with_fewer_steps_than_the_checkpoint_is_a_clear_error(tmp_path, data_cache):
    base, first = _finished_run(tmp_path, data_cache, steps=20)
    with pytest.raises(ConfigError, match="max_steps"):
        train(load_run_config([*base, "resume=auto", "train.max_steps=10"]), progress=False)
    assert client_for(first.tracking_uri).get_run(first.run_id).info.status == "FINISHED"


def test_restart_from_scratch_in_a_run_directory_with_checkpoints_is_a_clear_error(tmp_path, data_cache):
    base, first = _finished_run(tmp_path, data_cache, steps=20)
    with pytest.raises(ConfigError, match="already holds checkpoints of an earlier run .newest: step-000020.ckpt."):
        train(load_run_config([*base, "train.max_steps=10"]), progress=False)
    assert client_for(first.tracking_uri).get_run(first.run_id).info.status == "FINISHED"  # untouched
    assert latest_checkpoint(first.run_dir).name == "step-000020.ckpt"


def test_config_hash_ignores_where_the_data_cache_is(tmp_path):
    a = load_run_config([f"data.cache_dir={tmp_path / 'a'}"])
    b = load_run_config([f"data.cache_dir={tmp_path / 'b'}"])
    assert config_hash(a) == config_hash(b)


def test_a_numeric_run_name_is_a_name_or_a_clear_error():
    try:
        config = load_run_config(["name=2024"])
    except ConfigError:
        return
    assert config.name == "2024"


def test_a_failure_after_the_mlflow_run_exists_closes_it_failed_not_running(tmp_path, data_cache):
    """A bug between the MLflow run's creation and `fit` (here: a batch size that got past validation, the
    issue's TypeError) must not leave the run RUNNING."""
    config = load_run_config(tiny(tmp_path, "early", data_cache, max_steps=5))
    object.__setattr__(config.train, "batch_size", 2.5)  # what validation now refuses, forced past it
    with pytest.raises(TypeError):
        train(config, progress=False)
    run_id = (tmp_path / "early" / "mlflow_run_id").read_text().strip()
    run = client_for(config.tracking_uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert "TypeError" in run.data.tags["mta.failure_reason"]
    assert "step 0: FAILED (TypeError" in run.data.tags["mta.interruptions"]


def test_ctrl_c_in_a_library_call_marks_the_run_killed_not_failed(tmp_path, data_cache):
    config = load_run_config(tiny(tmp_path, "ctrlc", data_cache, max_steps=20))
    with pytest.raises(SystemExit):  # Lightning's answer to KeyboardInterrupt
        train(config, progress=False, extra_callbacks=[CtrlCAt(3)])
    run = client_for(config.tracking_uri).get_run((tmp_path / "ctrlc" / "mlflow_run_id").read_text().strip())
    assert run.info.status == "KILLED"
    assert run.data.tags["mta.failure_reason"] == "interrupted at step 3 (SystemExit)"
