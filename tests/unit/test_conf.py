"""Every shipped YAML composes into a valid RunConfig; bad overrides are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mta_lab.attention.presets import PRESETS
from mta_lab.conf import CONF_DIR, load_run_config
from mta_lab.model.config import MODEL_PRESETS
from mta_lab.train.config import ConfigError

GROUPS = ["model", "attention", "data", "optim", "train", "trainer", "tracking"]
MANDATORY = {"data=files": ["data.domains={web: [a.txt]}"], "data=slimpajama": ["data.path=/data/sp"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_defaults_compose():
    config = load_run_config([])
    assert (config.model_name, config.attention_name, config.data_name) == ("tiny", "transformer", "shakespeare")
    assert config.train.max_steps == 300 and config.trainer.strategy == "auto"
    assert config.tracking_uri.startswith("sqlite:///") and config.tracking_uri.endswith("runs/mlflow.db")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option):
    override = f"{group}={option}"
    config = load_run_config([override, *MANDATORY.get(override, [])])
    assert getattr(config, f"{group}_name", option) == option


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_validates(experiment):
    config = load_run_config([f"experiment={experiment}"])
    assert config.name == experiment
    config.attention.check_model(n_heads=config.model.n_heads, n_layers=config.model.n_layers)


def test_paper_and_toy_experiments_match_the_spec():
    toy = load_run_config(["experiment=toy_n8_first_mta"])
    assert toy.data.toy_n == 8 and toy.data.toy_variant == "first" and toy.attention.kq_pre == (2, 15)
    assert (toy.optim.lr, toy.optim.weight_decay, toy.optim.schedule) == (1e-4, 0.0, "constant")
    assert toy.train.batch_size == 64
    assert toy.model.dim == 256 and toy.model.n_layers == 4 and toy.model.n_heads == 2 and toy.model.hidden == 768
    paper = load_run_config(["experiment=paper_880m_mta"])
    assert paper.model.dim == 1536 and paper.attention_name == "mta" and paper.train.seq_len == 2048
    assert (paper.optim.lr, paper.optim.warmup_steps, paper.optim.betas) == (1.5e-4, 375, (0.9, 0.98))
    assert load_run_config(["experiment=paper_1b_transformer"]).optim.warmup_steps == 187


@pytest.mark.parametrize("name", list(PRESETS))
def test_attention_yaml_equals_the_python_preset(name):
    data = yaml.safe_load((CONF_DIR / "attention" / f"{name}.yaml").read_text())
    assert data == PRESETS[name][0].to_dict()


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_model_yaml_equals_the_python_preset(name):
    data = yaml.safe_load((CONF_DIR / "model" / f"{name}.yaml").read_text())
    assert data == MODEL_PRESETS[name][0].to_dict()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.foo=1"], "Could not override 'train.foo'"),
        (["+train.foo=1"], "train: unknown field(s) foo"),
        (["model=nope"], "Could not find 'model/nope'"),
        (["attention.kq_pre=[6,10]", "attention.kind=mta"], "c_k=10 is even"),
        (["train.max_steps=null"], "set exactly one of max_steps, token_budget, flop_budget"),
        (["train.token_budget=1000"], "set exactly one of max_steps, token_budget, flop_budget (got max_steps, "
                                      "token_budget)"),
        (["optim.schedule=step"], "optim.schedule='step': must be one of linear, cosine, constant"),
        (["trainer.strategy=single", "trainer.devices=2"], "runs on one device"),
        (["tracking.uri=./mlruns"], "the ./mlruns file store is not supported"),
        (["data=files"], "Missing mandatory value: domains"),
        (["model.n_heads=5"], "model.n_heads=5: must divide model.dim=64"),
        (["name=a/b"], "run.name='a/b'"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=None) as info:
        load_run_config(overrides)
    assert message in " ".join(str(info.value).split())


def test_every_shipped_yaml_is_covered():
    shipped = {p.relative_to(CONF_DIR).as_posix() for p in Path(CONF_DIR).rglob("*.yaml")}
    covered = {"config.yaml"} | {f"{g}/{o}.yaml" for g in [*GROUPS, "experiment"] for o in options(g)}
    covered |= {f"cluster/{o}.yaml" for o in options("cluster")}  # not composed: tests/unit/test_cluster_profiles.py
    assert shipped == covered


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
