"""Schedules (spec §4: linear warmup then linear decay to 0; cosine; constant) and parameter groups."""

from __future__ import annotations

import pytest
import torch

from mta_lab.attention.presets import load_preset
from mta_lab.model import build_model, load_model_preset
from mta_lab.train.config import OptimConfig
from mta_lab.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_linear_warmup_then_linear_decay_to_zero():
    config = OptimConfig(schedule="linear", warmup_steps=10, min_lr_ratio=0.0)
    factors = [lr_factor(s, 110, config) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.5) and factors[110] == 0.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def test_cosine_reaches_the_floor_and_constant_stays():
    cosine = OptimConfig(schedule="cosine", warmup_steps=0, min_lr_ratio=0.1)
    assert lr_factor(0, 100, cosine) == pytest.approx(1.0)
    assert lr_factor(50, 100, cosine) == pytest.approx(0.55)
    assert lr_factor(100, 100, cosine) == pytest.approx(0.1)
    constant = OptimConfig(schedule="constant", warmup_steps=5)
    assert lr_factor(2, 100, constant) == pytest.approx(0.6) and lr_factor(99, 100, constant) == 1.0


def test_scheduler_drives_the_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    config = OptimConfig(lr=1.0, schedule="linear", warmup_steps=2)
    opt = build_optimizer(model, config)
    sched = build_scheduler(opt, 10, config)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.0, 0.875])


def test_decay_groups_hold_projections_only():
    model = build_model(load_model_preset("tiny"), load_preset("mta", kq_layers="all"))
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert "layers.0.attn.wq.weight" in decayed and "layers.0.mlp.w2.weight" in decayed
    for name in ("tok_embeddings.weight", "norm.weight", "layers.0.attn.kq_pre", "layers.0.attn.head_pre",
                 "layers.0.attn.head_post", "layers.0.attn.norm_weight", "layers.0.attn.gate.bias"):
        assert name in kept
    assert len(decayed) + len(kept) == len(list(model.parameters()))
