"""model=hf model.path=<dir> through the real training entry (Lightning, data, MLflow sqlite) on CPU: a few steps
on a tiny local Llama with MTA, finite changing loss, the result saved in final/hf and reloaded; bad model=hf
settings are one message at composition, before any run directory."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from integration_helpers import client_for, tiny  # noqa: E402

from mta_lab.conf import load_run_config  # noqa: E402
from mta_lab.errors import UserError  # noqa: E402
from mta_lab.hf import load_model  # noqa: E402
from mta_lab.train.entry import train  # noqa: E402


def test_a_few_training_steps_on_a_local_llama_with_mta(tmp_path, byte_llama, data_cache):
    config = load_run_config([*tiny(tmp_path / "runs", "hf-mta", data_cache, max_steps=6, seq_len=32),
                              "model=hf", f"model.path={byte_llama}", "attention=mta", "attention.kq_layers=all",
                              "optim.lr=3e-3", "optim.warmup_steps=0"])
    assert (config.model.dim, config.model.n_layers, config.model.vocab_size) == (32, 2, 512)
    result = train(config, progress=False)
    client = client_for(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    losses = [m.value for m in client.get_metric_history(result.run_id, "train/loss")]
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] != losses[0]
    saved = load_model(f"{result.run_dir}/final/hf")  # the trained model, MTA tensors included
    assert saved.config.mta_attention["kq_layers"] == "all"
    original = load_model(byte_llama, config.attention)
    moved = [n for (n, p), (_, q) in zip(saved.named_parameters(), original.named_parameters(), strict=True)
             if ".mta." in n and not torch.equal(p, q)]
    assert moved  # the MTA parameters trained


@pytest.mark.parametrize("overrides,message", [
    (["model=hf"], "model=hf needs the local directory"),
    (["model=hf", "model.path=/nonexistent/llama"], "no config.json"),
    (["model.path=/x"], "applies only to a Hugging Face checkpoint"),
])
def test_bad_hf_settings_fail_when_composed(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        load_run_config([f"root={tmp_path}", *overrides])
    assert not any(tmp_path.iterdir())


def test_a_non_llama_checkpoint_fails_when_composed(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(UserError, match="Llama architecture only"):
        load_run_config(["model=hf", f"model.path={tmp_path / 'gpt2'}"])
