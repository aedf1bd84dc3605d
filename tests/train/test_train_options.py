"""Training options that must not change the result: activation checkpointing; budgets that set the steps."""

from __future__ import annotations

import pytest
from integration_helpers import client_for, history, tiny

from mta_lab.conf import load_run_config
from mta_lab.train.entry import train


def test_activation_checkpointing_gives_the_same_losses(tmp_path, data_cache):
    runs = {}
    for name, checkpointing in (("plain", "false"), ("recompute", "true")):
        overrides = [*tiny(tmp_path, name, data_cache, max_steps=8), "attention=mta",
                     f"train.activation_checkpointing={checkpointing}"]
        result = train(load_run_config(overrides), progress=False)
        runs[name] = history(client_for(result.tracking_uri), result.run_id, "train/loss")
    assert len(runs["plain"]) == 8
    assert [v for _, v in runs["recompute"]] == pytest.approx([v for _, v in runs["plain"]], rel=1e-6)


def test_a_token_budget_sets_the_number_of_steps(tmp_path, data_cache):
    # 4 sequences x 64 tokens = 256 tokens per step: 2,000 tokens buy ceil(2000 / 256) = 8 steps.
    overrides = [*tiny(tmp_path, "budget", data_cache), "train.max_steps=null", "train.token_budget=2000"]
    result = train(load_run_config(overrides), progress=False)
    assert result.steps == 8
    run = client_for(result.tracking_uri).get_run(result.run_id)
    assert run.data.params["train.total_steps"] == "8" and run.data.params["train.tokens_per_step"] == "256"
