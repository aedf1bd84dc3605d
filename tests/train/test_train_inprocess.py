"""One tiny CPU run end to end, in-process (load_run_config + train): the MLflow contract of design.md (tags,
curated params, the config artifact, per-step and final/* metrics), the run directory, the exported model;
then determinism across runs."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from integration_helpers import REPO, client_for, history, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.eval.checkpoint import load_model as load_exported
from mta_lab.train.config import RunConfig
from mta_lab.train.entry import config_hash, train

SHAKESPEARE_DOMAINS = ("comedies", "histories", "problems", "roman", "romances", "tragedies")
STEPS, VAL_EVERY, VAL_BATCHES, BATCH, SEQ = 30, 15, 2, 4, 64


def _expected_git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, data_cache):
    root = tmp_path_factory.mktemp("e2e")
    config = load_run_config(tiny(root, "e2e", data_cache, max_steps=STEPS, val_every=VAL_EVERY,
                                  val_batches=VAL_BATCHES, batch_size=BATCH, seq_len=SEQ))
    result = train(config, progress=False)
    client = client_for(result.tracking_uri)
    return config, result, client, client.get_run(result.run_id)


def test_run_is_finished_and_tagged(e2e):
    from mta_lab.data import build_data

    config, result, _, run = e2e
    assert result.tracking_uri == f"sqlite:///{Path(config.root).resolve()}/mlflow.db"
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "e2e"
    tags = run.data.tags
    assert tags["mta.variant"] == "transformer"
    assert tags["mta.size"] == "tiny"
    assert tags["mta.seed"] == "0"
    assert tags["mta.config_hash"] == config_hash(config)
    assert len(tags["mta.config_hash"]) == 16
    assert tags["mta.git_sha"] == _expected_git_sha()
    assert tags["mta.data_fingerprint"] == build_data(config.data, seq_len=SEQ).fingerprint
    assert tags["mta.run_dir"] == str(Path(result.run_dir).resolve())
    assert "mta.failure_reason" not in tags


def test_curated_params(e2e):
    _, result, _, run = e2e
    params = run.data.params
    expected = {
        "model": "tiny", "attention": "transformer", "data": "shakespeare",
        "model.dim": "64", "model.n_layers": "4", "model.n_heads": "4", "model.vocab_size": "512",
        "model.params": str(result.params), "attention.kind": "softmax",
        "train.seed": "0", "train.batch_size": str(BATCH), "train.seq_len": str(SEQ),
        "train.total_steps": str(STEPS), "train.tokens_per_step": str(BATCH * SEQ),
        "optim.lr": "0.003", "optim.schedule": "cosine", "trainer.devices": "1",
    }
    assert {k: params.get(k) for k in expected} == expected
    assert int(params["flops_per_token"]) > 0


def test_config_artifact_revalidates(e2e, tmp_path):
    config, result, client, _ = e2e
    assert [a.path for a in client.list_artifacts(result.run_id)] == ["config.yaml"]
    local = client.download_artifacts(result.run_id, "config.yaml", str(tmp_path))
    logged = yaml.safe_load(Path(local).read_text())
    assert RunConfig.from_dict(logged) == config
    assert (Path(result.run_dir) / "config.yaml").read_text() == Path(local).read_text()


def test_per_step_metric_histories(e2e):
    _, result, client, run = e2e
    loss = history(client, result.run_id, "train/loss")
    steps = steps_of(loss)
    assert len(steps) == len(set(steps)) == STEPS  # one point per logged step (log_every=1), none twice
    assert steps == list(range(steps[0], steps[0] + STEPS)) and steps[0] in (0, 1)
    assert all(math.isfinite(v) for _, v in loss)
    for key in ("lr", "tokens_seen", "flops_seen"):
        assert steps_of(history(client, result.run_id, key)) == steps, key
    tokens = history(client, result.run_id, "tokens_seen")
    assert [v for _, v in tokens] == [float((i + 1) * BATCH * SEQ) for i in range(STEPS)]
    flops_per_token = int(run.data.params["flops_per_token"])
    flops = history(client, result.run_id, "flops_seen")
    assert [v for _, v in flops] == pytest.approx([t * flops_per_token for _, t in tokens], rel=1e-6)
    lrs = [v for _, v in history(client, result.run_id, "lr")]
    assert max(lrs) == pytest.approx(3e-3, rel=1e-6)  # warmup (20 steps) reaches the peak, then cosine decay
    assert lrs[0] < lrs[19] and lrs[-1] < lrs[19]


def test_validation_metrics_and_domain_mean(e2e):
    _, result, client, _ = e2e
    val_ppl = history(client, result.run_id, "val/ppl")
    val_loss = history(client, result.run_id, "val/loss")
    assert len(val_ppl) == STEPS // VAL_EVERY
    assert steps_of(val_loss) == steps_of(val_ppl)
    domains = {d: history(client, result.run_id, f"val/{d}/ppl") for d in SHAKESPEARE_DOMAINS}
    domain_losses = {d: history(client, result.run_id, f"val/{d}/loss") for d in SHAKESPEARE_DOMAINS}
    for i, (step, ppl) in enumerate(val_ppl):
        ppls = [domains[d][i] for d in SHAKESPEARE_DOMAINS]
        assert all(s == step for s, _ in ppls)
        assert ppl == pytest.approx(sum(v for _, v in ppls) / len(ppls), rel=1e-5)  # the paper's "Avg"
        losses = [domain_losses[d][i][1] for d in SHAKESPEARE_DOMAINS]
        assert val_loss[i][1] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
        for d in SHAKESPEARE_DOMAINS:
            assert domains[d][i][1] == pytest.approx(math.exp(domain_losses[d][i][1]), rel=1e-5)
    assert val_ppl[-1][1] < val_ppl[0][1]


def test_final_metrics_and_loss_falls(e2e):
    _, result, client, run = e2e
    metrics = run.data.metrics
    loss = history(client, result.run_id, "train/loss")
    assert loss[-1][1] < loss[0][1]
    assert loss[0][1] == pytest.approx(math.log(512), rel=0.15)  # a well-initialised model starts near ln(vocab)
    assert metrics["final/steps"] == STEPS
    assert metrics["final/params"] == result.params
    assert metrics["final/flops_per_token"] == float(run.data.params["flops_per_token"])
    assert metrics["final/train_loss"] == pytest.approx(loss[-1][1], rel=1e-6)
    assert metrics["final/val_loss"] == pytest.approx(history(client, result.run_id, "val/loss")[-1][1], rel=1e-6)
    assert metrics["final/val_ppl"] == pytest.approx(history(client, result.run_id, "val/ppl")[-1][1], rel=1e-6)
    assert metrics["final/tokens_per_s"] > 0 and metrics["final/wall_s"] > 0
    assert "final/val_error_rate" not in metrics  # text data: no toy error rate
    assert {k for k in metrics if k.startswith("final/")} == set(result.metrics)
    for key, value in result.metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6), key
    assert result.steps == STEPS and result.resumed_from is None


def test_run_directory_and_exported_model(e2e):
    from mta_lab.data import build_data
    from mta_lab.train.module import masked_cross_entropy

    config, result, _, run = e2e
    run_dir = Path(result.run_dir)
    assert (run_dir / "mlflow_run_id").read_text().strip() == result.run_id
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["step-000020.ckpt", "step-000030.ckpt"]  # keep_checkpoints=2
    model, payload = load_exported(run_dir / "final" / "model.pt")
    assert payload["step"] == STEPS
    assert payload["data"] == config.data.to_dict()
    assert not model.training

    # The export holds the weights of the last checkpoint.
    ckpt = torch.load(run_dir / "checkpoints" / "step-000030.ckpt", map_location="cpu", weights_only=False)
    from_ckpt = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    exported = model.state_dict()
    assert set(exported) == set(from_ckpt)
    for key, value in exported.items():
        assert torch.equal(value, from_ckpt[key]), key

    # ... and gives back the last validation loss on the validation batches the run used.
    bundle = build_data(config.data, seq_len=SEQ)
    losses = []
    with torch.no_grad():
        for batches in bundle.val_batches(BATCH).values():
            total = count = 0.0
            for batch in batches[:VAL_BATCHES]:
                tokens = batch["tokens"]
                logits = model(tokens[:, :-1])
                assert torch.isfinite(logits).all()
                loss_sum, n = masked_cross_entropy(logits, tokens[:, 1:], batch["loss_mask"])
                total, count = total + loss_sum.item(), count + n.item()
            losses.append(total / count)
    assert sum(losses) / len(losses) == pytest.approx(run.data.metrics["final/val_loss"], rel=1e-4)


def test_same_seed_same_history_other_seed_differs(e2e, tmp_path, data_cache):
    config, first, client, first_run = e2e
    base = tiny(tmp_path, "again", data_cache, max_steps=STEPS, val_every=VAL_EVERY, val_batches=VAL_BATCHES,
                batch_size=BATCH, seq_len=SEQ)
    again = train(load_run_config(base), progress=False)
    other = train(load_run_config([*base, "name=seed1", "train.seed=1"]), progress=False)
    again_client = client_for(again.tracking_uri)
    reference = history(client, first.run_id, "train/loss")
    assert history(again_client, again.run_id, "train/loss") == reference  # exact: steps and float values
    assert history(again_client, again.run_id, "val/ppl") == history(client, first.run_id, "val/ppl")
    other_loss = history(again_client, other.run_id, "train/loss")
    assert steps_of(other_loss) == steps_of(reference)
    assert [v for _, v in other_loss] != [v for _, v in reference]
    assert other_loss[0][1] != reference[0][1]
    tags = {r: again_client.get_run(r).data.tags for r in (again.run_id, other.run_id)}
    assert tags[again.run_id]["mta.config_hash"] == first_run.data.tags["mta.config_hash"]
    assert tags[other.run_id]["mta.config_hash"] != first_run.data.tags["mta.config_hash"]
    assert tags[other.run_id]["mta.seed"] == "1"


@pytest.mark.parametrize(("attention", "expected"), [
    ("mta", "eager (3 layers), stacked (1 layer)"),  # head mixing everywhere, kq convs on layer 2 (every:4:2)
    ("t5_kq_6x11", "sdpa (3 layers), stacked (1 layer)"),  # kq conv on layer 2 only: the others mix nothing
])
def test_resolved_backends_are_logged_after_the_first_step(tmp_path, data_cache, attention, expected):
    config = load_run_config([*tiny(tmp_path, f"backends-{attention}", data_cache, max_steps=3),
                              f"attention={attention}"])
    result = train(config, progress=False)
    params = client_for(result.tracking_uri).get_run(result.run_id).data.params
    assert params["attention.backend"] == "auto"
    assert params["attention.backend.resolved"] == expected


def test_softmax_runs_log_no_resolved_backend(e2e):
    _, _, _, run = e2e
    assert "attention.backend.resolved" not in run.data.params  # no MTA layer: nothing resolved
