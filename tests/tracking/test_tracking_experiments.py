"""Experiments the platform creates carry MLflow's model-training kind; links open the UI on the runs view."""

from __future__ import annotations

import yaml
from mlflow.tracking import MlflowClient

from mta_lab.sweep.spec import SweepSpec
from mta_lab.sweep.study import create
from mta_lab.tracking.experiments import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    experiment_page,
    get_or_create_experiment,
    ui_url,
)
from mta_lab.tracking.mlflow_run import RunHandle


def _uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_a_training_run_creates_its_experiment_as_model_training(tmp_path):
    handle = RunHandle(_uri(tmp_path), "fresh", run_name="r")
    handle.finish()
    exp = MlflowClient(_uri(tmp_path)).get_experiment_by_name("fresh")
    assert exp.tags[EXPERIMENT_KIND_TAG] == "custom_model_development" == MODEL_TRAINING
    assert exp.experiment_id == handle.experiment_id
    assert exp.artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()  # beside the db, as before


def test_a_sweep_creates_its_experiment_as_model_training(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "kind_check", "kind": "ablation", "seeds": [0],
                                    "base": ["experiment=tiny", "trainer=cpu"],
                                    "ablation": {"variants": {"transformer": ["attention=transformer"]}},
                                    "tracking": {"experiment": "sweep_exp"}}))
    sweep = create(SweepSpec.load(path), tmp_path / "sweep")
    client = MlflowClient(sweep.tracking_uri)
    exp = client.get_experiment_by_name("sweep_exp")
    assert exp is not None and exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`mta.role` = 'sweep'")
    assert len(parent) == 1  # the sweep's parent run lives in that experiment


def test_an_older_experiment_gets_the_kind_and_a_chosen_kind_is_kept(tmp_path):
    client = MlflowClient(_uri(tmp_path))
    old = client.create_experiment("old")  # as the platform made them before: no kind
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert get_or_create_experiment(client, "old") == old
    assert get_or_create_experiment(client, "chosen") == chosen
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_ui_links_open_on_the_model_training_runs(tmp_path):
    assert ui_url("7") == "http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    assert ui_url("7", "http://host:5001/") == "http://host:5001/#/experiments/7?workflowType=machine_learning"
    exp_id = get_or_create_experiment(MlflowClient(_uri(tmp_path)), "linked")
    assert experiment_page(_uri(tmp_path), "linked") == ui_url(exp_id)
    assert experiment_page(_uri(tmp_path), "missing") == "http://127.0.0.1:5000"
