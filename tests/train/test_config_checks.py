"""Checks made when the config is validated, before any data, run directory or MLflow run: integer fields hold
integers, and the attention spec fits the model (head groups, kq layers, DIFF's head pairs)."""

from __future__ import annotations

import typing
from dataclasses import fields

import pytest

from mta_lab.conf import load_run_config
from mta_lab.data.config import DataConfig
from mta_lab.errors import UserError
from mta_lab.model.config import ModelConfig
from mta_lab.train.config import OptimConfig, TrainConfig, TrainerConfig

SECTIONS = {"train": TrainConfig, "trainer": TrainerConfig, "optim": OptimConfig, "model": ModelConfig,
            "data": DataConfig}


def _int_fields() -> list[str]:
    """`<section>.<field>` of every field typed `int` or `int | None` in the typed configs."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            args = set(typing.get_args(hints[f.name])) or {hints[f.name]}
            if int in args and args <= {int, type(None)}:
                out.append(f"{section}.{f.name}")
    return out


INT_FIELDS = _int_fields()


def test_the_integer_fields_are_found():
    assert {"train.batch_size", "train.max_steps", "train.seed", "trainer.devices", "model.dim",
            "data.toy_n", "optim.warmup_steps"} <= set(INT_FIELDS)


@pytest.mark.parametrize("key", INT_FIELDS)
def test_a_fractional_value_of_an_integer_field_is_one_error_naming_it(key):
    with pytest.raises(UserError) as info:
        load_run_config([f"{key}=2.5"])
    message = " ".join(str(info.value).split())
    assert f"{key}=2.5" in message and "integer" in message, message


@pytest.mark.parametrize("key", ["train.batch_size", "train.max_steps", "train.val_every", "trainer.devices"])
def test_a_string_or_bool_in_an_integer_field_is_an_error(key):
    for value in ("abc", "true"):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            load_run_config([f"{key}={value}"])


def test_max_steps_is_not_cut_to_an_integer():
    with pytest.raises(UserError, match=r"train\.max_steps=5\.5: must be an integer"):
        load_run_config(["train.max_steps=5.5"])


def test_a_token_budget_written_as_a_whole_float_is_an_integer():
    config = load_run_config(["train.max_steps=null", "train.token_budget=1e5"])
    assert config.train.token_budget == 100_000 and type(config.train.token_budget) is int


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attention=mta", "attention.head_post=grouped", "attention.head_post_group=3"],
         "attention.head_post_group=3: c_h must divide n_heads=4"),
        (["attention=mta", "attention.kq_layers=[7]"], "layer index 7 >= n_layers=4"),
        (["attention=mta", "attention.kq_layers=every:4:5"], "offset >= n_layers=4"),
        (["attention=diff", "model.n_heads=1"], "needs an even number of heads; the model has n_heads=1"),
    ],
)
def test_model_dependent_spec_errors_fail_when_the_config_is_validated(overrides, message):
    with pytest.raises(UserError) as info:
        load_run_config(overrides)
    assert message in " ".join(str(info.value).split())
