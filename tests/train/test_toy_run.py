"""The paper's toy task ("find the block") as a run: the experiment preset trains and logs its error rate."""

from __future__ import annotations

import pytest
from integration_helpers import client_for, history

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train


@pytest.mark.slow
def test_toy_experiment_logs_its_error_rate(tmp_path, data_cache):
    config = load_run_config([
        "experiment=toy", "attention=toy_mta_n5", f"root={tmp_path}", f"data.cache_dir={data_cache}", "trainer=cpu",
        "data.toy_train_samples=2000", "data.toy_test_samples=64",
        "train.max_steps=10", "train.batch_size=8", "train.val_every=10",
    ])
    assert (config.name, config.data.kind, config.attention.kind) == ("toy_n5_all_mta", "toy", "mta")
    result = train(config, progress=False)
    client = client_for(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mta.variant"] == "toy_mta_n5" and run.data.tags["mta.size"] == "toy"

    errors = history(client, result.run_id, "val/error_rate")
    assert len(errors) == 1
    assert 0.0 <= errors[0][1] <= 1.0
    final = run.data.metrics["final/val_error_rate"]
    assert final == pytest.approx(errors[0][1]) and 0.0 <= final <= 1.0
    assert result.metrics["final/val_error_rate"] == pytest.approx(final)
    assert 0.0 < run.data.metrics["final/val_loss"] < 10.0
    assert run.data.metrics["final/steps"] == 10


@pytest.mark.slow
def test_eval_toy_reloads_the_checkpoint_on_a_fresh_test_set(tmp_path, data_cache, capsys):
    import json

    from mta_lab.cli import main
    from mta_lab.data import DataConfig, build_data
    from mta_lab.eval.checkpoint import load_model
    from mta_lab.eval.toy import evaluate_toy

    config = load_run_config([
        "experiment=toy", "data.toy_variant=last", f"root={tmp_path}", f"data.cache_dir={data_cache}", "trainer=cpu",
        "data.toy_train_samples=2000", "data.toy_test_samples=32", "train.max_steps=6", "train.batch_size=8",
        "train.val_every=6", "train.ckpt_every=3",
    ])
    result = train(config, progress=False)
    run_dir = tmp_path / "toy_n5_last_transformer"

    # The export and the last Lightning checkpoint hold the same model.
    exported, payload = load_model(run_dir)
    from_ckpt, _ = load_model(run_dir / "checkpoints" / "step-000006.ckpt")
    for (name, a), (_, b) in zip(exported.state_dict().items(), from_ckpt.state_dict().items(), strict=True):
        assert torch_equal(a, b), name
    assert payload["data"]["toy_variant"] == "last" and payload["step"] == 6

    # On the run's own test set, eval reproduces the logged error rate exactly ...
    own = build_data(DataConfig.from_dict(payload["data"]), seq_len=0).val_batches(16)["toy"]
    assert evaluate_toy(exported, own).rate == pytest.approx(result.metrics["final/val_error_rate"])
    # ... and the CLI evaluates any number of fresh samples.
    assert main(["eval", "toy", f"ckpt={run_dir}", "samples=40", "data_seed=7", "batch_size=16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["samples"] == 40 and out["toy_variant"] == "last" and out["data_seed"] == 7
    assert 0 <= out["errors"] <= 40 and out["error_rate"] == out["errors"] / 40


def test_eval_toy_rejects_bad_checkpoints(tmp_path, capsys):
    from mta_lab.cli import main

    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    assert main(["eval", "toy", f"ckpt={tmp_path / 'missing'}"]) == 2
    assert main(["eval", "toy", f"ckpt={tmp_path / 'junk.ckpt'}"]) == 2
    assert main(["eval", "toy", "samples=10"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "not a file" in err and "cannot be read as a checkpoint" in err and "ckpt= is required" in err


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)
