"""DDP and FSDP2 with 2 CPU processes (gloo) through `mta-lab train`: one MLflow run per training run (rank 0 owns
it), the global batch in the params, sharded checkpoints that resume."""

from __future__ import annotations

import math

import pytest
from integration_helpers import client_for, history, run_cli, runs_in, sqlite_uri, steps_of, tiny

from mta_lab.conf import load_run_config
from mta_lab.eval.checkpoint import load_model as load_exported
from mta_lab.model.transformer import build_model

BATCH, SEQ = 4, 64


def _the_one_run(root):
    runs = runs_in(sqlite_uri(root))
    assert len(runs) == 1, [(r.info.run_name, r.info.status) for r in runs]  # not one per rank
    return runs[0]


@pytest.mark.slow
def test_ddp_two_cpu_processes_make_one_finished_run(tmp_path):
    # A fresh data cache: both ranks pack the corpus at once (build_data says that is safe).
    args = tiny(tmp_path, "ddp", tmp_path / "cache", trainer="ddp_cpu", max_steps=30, val_every=15,
                batch_size=BATCH, seq_len=SEQ)
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr

    run = _the_one_run(tmp_path)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.tokens_per_step"] == str(2 * BATCH * SEQ)
    assert (params["trainer.devices"], params["trainer.strategy"]) == ("2", "ddp")
    client = client_for(sqlite_uri(tmp_path))
    loss = history(client, run.info.run_id, "train/loss")
    assert len(steps_of(loss)) == len(set(steps_of(loss))) == 30
    assert loss[-1][1] < loss[0][1]
    assert history(client, run.info.run_id, "tokens_seen")[-1][1] == 30 * 2 * BATCH * SEQ
    val_ppl = history(client, run.info.run_id, "val/ppl")
    assert len(val_ppl) == 2 and all(math.isfinite(v) for _, v in val_ppl)
    assert run.data.metrics["final/steps"] == 30
    model, payload = load_exported(tmp_path / "ddp" / "final" / "model.pt")
    assert payload["step"] == 30


@pytest.mark.slow
def test_fsdp_two_cpu_processes_shard_checkpoints_export_and_resume(tmp_path, data_cache):
    args = tiny(tmp_path, "fsdp", data_cache, trainer="fsdp_cpu", max_steps=20, ckpt_every=10,
                batch_size=BATCH, seq_len=SEQ)
    args.append("attention=mta")
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = tmp_path / "fsdp"
    run = _the_one_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["mta.variant"], run.data.params["trainer.strategy"]) == ("mta", "fsdp")

    # Sharded checkpoints: a directory per step, one shard file per rank.
    sharded = run_dir / "checkpoints" / "step-000020.ckpt"
    assert sharded.is_dir()
    assert len(list(sharded.glob("*.distcp"))) == 2

    # The export is a plain, unsharded state dict of the MTA model.
    config = load_run_config(args)
    model, payload = load_exported(run_dir / "final" / "model.pt")
    assert payload["step"] == 20 and payload["attention"]["kind"] == "mta"
    expected_keys = set(build_model(config.model, config.attention).state_dict())
    state = model.state_dict()
    assert set(state) == expected_keys
    mta_keys = {k for k in state if k.endswith(("attn.kq_pre", "attn.kq_post", "attn.head_pre", "attn.head_post"))}
    assert {"layers.2.attn.kq_pre", "layers.2.attn.kq_post", "layers.2.attn.head_pre", "layers.2.attn.head_post"} \
        <= mta_keys
    for key in mta_keys:
        assert state[key].numel() > 0
    assert all(v.isfinite().all() for v in state.values())

    client = client_for(sqlite_uri(tmp_path))
    loss = history(client, run.info.run_id, "train/loss")
    # Built on the meta device and initialised after sharding: starts like a well-initialised model, near ln(vocab).
    assert loss[0][1] == pytest.approx(math.log(512), rel=0.15)
    assert loss[-1][1] < loss[0][1]

    # resume=auto with a larger budget continues from the sharded checkpoint, in the same MLflow run.
    resumed = run_cli(*args, "resume=auto", "train.max_steps=30")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "step-000020.ckpt" in "".join(resumed.stdout.split())
    again = _the_one_run(tmp_path)
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert again.data.metrics["final/steps"] == 30
    assert (run_dir / "checkpoints" / "step-000030.ckpt").is_dir()
    assert load_exported(run_dir / "final" / "model.pt")[1]["step"] == 30
    loss = history(client, run.info.run_id, "train/loss")
    steps = steps_of(loss)
    assert steps == list(range(steps[0], steps[0] + len(steps)))  # unique and no gap across the resume
    assert max(steps) == steps_of(history(client, run.info.run_id, "tokens_seen"))[-1] == 29
    assert history(client, run.info.run_id, "tokens_seen")[-1][1] == 30 * 2 * BATCH * SEQ
    # The weights and optimizer came back: training continues near where it stopped, not from scratch.
    by_step = dict(loss)
    assert by_step[21] < by_step[0] - 1.0
