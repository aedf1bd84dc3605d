"""`train.evals`: a tiny training run evaluates its final model and logs eval/* into its own MLflow run (real
sqlite MLflow, real Lightning); a bad eval option or an eval the model cannot run fails before any run directory
or MLflow record; an eval that fails after training leaves the run FINISHED with the tag mta.eval_failed."""

from __future__ import annotations

import lightning as L
import pytest
from integration_helpers import client_for, runs_in, sqlite_uri, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.config import ConfigError
from mta_lab.train.entry import train

NIAH = "train.eval_options={niah:{contexts:[160],needles:[1,2],depths:[0,1],samples:2,batch_size:4}}"


def test_a_run_with_train_evals_logs_eval_metrics_into_its_mlflow_run(tmp_path, data_cache):
    config = load_run_config([*tiny(tmp_path, "ev", data_cache, max_steps=3), "train.evals=[niah]", NIAH])
    result = train(config, progress=False)
    run = client_for(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "mta.eval_failed" not in run.data.tags
    metrics = run.data.metrics
    settings = {f"eval/niah/c160_n{n}_d{d}/acc" for n in (1, 2) for d in (0, 1)}
    assert settings | {"eval/niah/acc", "final/train_loss"} <= set(metrics)
    assert not any(k.startswith("eval/") and k.split("/")[1] != "niah" for k in metrics)
    assert metrics["eval/niah/acc"] == pytest.approx(sum(metrics[k] for k in settings) / 4)
    assert result.metrics["eval/niah/acc"] == metrics["eval/niah/acc"]  # what a sweep's objective reads
    # logged at the final step, with the artifacts `mta-lab eval` writes; the same numbers as its JSON
    history = client_for(result.tracking_uri).get_metric_history(result.run_id, "eval/niah/acc")
    assert [m.step for m in history] == [3]
    artifacts = {a.path for a in client_for(result.tracking_uri).list_artifacts(result.run_id, "eval")}
    assert {"eval/niah.json", "eval/niah.csv"} <= artifacts
    assert {"evals": ["niah"], "eval_options": {"niah": {"batch_size": 4, "contexts": "160", "depths": "0,1",
                                                          "needles": "1,2", "samples": 2}}}.items() <= \
        config.to_dict()["train"].items()


@pytest.mark.parametrize("overrides,fragments", [
    (["train.evals=[niah]", "train.eval_options={niah:{samples:0}}"],
     ["train.eval_options.niah.samples=0: must be a positive integer"]),
    (["train.evals=[niah]", "train.eval_options={niah:{colour:red}}"], ["unknown option(s) colour"]),
    (["train.evals=[mmlu]"], ["train.evals=['mmlu']: unknown task mmlu; allowed: niah"]),
    (["train.eval_options={niah:{samples:2}}"], ["niah is not in train.evals"]),
])
def test_a_bad_eval_option_fails_at_config_validation(overrides, fragments, tmp_path, data_cache):
    with pytest.raises(ConfigError) as info:
        load_run_config([*tiny(tmp_path, "bad", data_cache, max_steps=3), *overrides])
    assert all(f in str(info.value) for f in fragments), str(info.value)
    assert not (tmp_path / "bad").exists()


def test_an_eval_the_model_cannot_run_fails_before_any_record(tmp_path, data_cache):
    """contexts=4096 validates as an option; it is longer than the tiny model's context (256): refused at train
    start, with no run directory and no MLflow run."""
    config = load_run_config([*tiny(tmp_path, "long", data_cache, max_steps=3), "train.evals=[niah]",
                              "train.eval_options={niah:{contexts:[4096]}}"])
    with pytest.raises(ConfigError, match=r"train.evals: niah cannot run on this model: contexts=4096: the "
                       r"checkpoint's context is 256 tokens"):
        train(config, progress=False)
    assert not (tmp_path / "long").exists() and runs_in(sqlite_uri(tmp_path)) == []


class _RemoveFile(L.Callback):
    """Deletes the LAMBADA file when training ends: the eval after it fails for real."""

    def __init__(self, path):
        self.path = path

    def on_fit_end(self, trainer, pl_module):
        self.path.unlink()


def test_an_eval_failing_after_training_leaves_the_run_finished_with_the_reason(tmp_path, data_cache):
    lambada = tmp_path / "lambada.txt"
    lambada.write_text("the cat sat on the mat\nto be or not to be\n")
    config = load_run_config([*tiny(tmp_path, "fails", data_cache, max_steps=3), "train.evals=[lambada,niah]",
                              f"train.eval_options={{lambada:{{data.path:'{lambada}'}},niah:{{contexts:[160],"
                              "needles:[1],depths:[1],samples:1}}"])
    result = train(config, progress=False, extra_callbacks=[_RemoveFile(lambada)])
    run = client_for(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "final/train_loss" in run.data.metrics
    assert run.data.tags["mta.eval_failed"].startswith(f"lambada: EvalError: data.path={lambada}: no such file")
    assert set(result.eval_failures) == {"lambada"}
    assert "eval/niah/acc" in run.data.metrics and not any(k.startswith("eval/lambada") for k in run.data.metrics)
    assert (tmp_path / "fails" / "final" / "model.pt").is_file()
