"""Every shipped YAML and every registered preset composes into a valid RunConfig; recipes compose to what the
paper says; bad overrides are one clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mta_lab.attention.presets import PRESETS
from mta_lab.conf import CONF_DIR, compose_dict, group_options, load_run_config
from mta_lab.model.config import MODEL_PRESETS
from mta_lab.train.config import ConfigError

GROUPS = ["model", "attention", "data", "optim", "train", "trainer", "tracking"]
MANDATORY = {"data=files": ["data.domains={web: [a.txt]}"], "data=slimpajama": ["data.path=/data/sp"]}
PAPER_SIZES = ["300m", "550m", "880m", "1b"]
VARIANTS = ["transformer", "mta", "talking_heads", "diff"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_preset_groups_offer_exactly_the_python_presets_and_no_yaml():
    assert group_options("attention") == sorted(PRESETS) and group_options("model") == sorted(MODEL_PRESETS)
    assert not (CONF_DIR / "attention").exists() and not (CONF_DIR / "model").exists()
    for group in ["data", "optim", "train", "trainer", "tracking", "experiment"]:
        assert group_options(group) == options(group)


def test_defaults_compose():
    config = load_run_config([])
    assert (config.model_name, config.attention_name, config.data_name) == ("tiny", "transformer", "shakespeare")
    assert config.train.max_steps == 300 and config.trainer.strategy == "auto"
    assert config.tracking_uri.startswith("sqlite:///") and config.tracking_uri.endswith("runs/mlflow.db")


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in group_options(g)])
def test_every_group_option_composes_and_validates(group, option):
    override = f"{group}={option}"
    if override == "model=hf":  # composes only with a local checkpoint: tests/hf/test_train.py builds one
        with pytest.raises(ConfigError, match="model=hf needs the local directory of a Llama checkpoint"):
            load_run_config([override])
        return
    config = load_run_config([override, *MANDATORY.get(override, [])])
    assert getattr(config, f"{group}_name", option) == option


@pytest.mark.parametrize("name", list(PRESETS))
def test_attention_option_composes_to_the_python_preset(name):
    assert compose_dict([f"attention={name}"])["attention"] == PRESETS[name][0].to_dict()
    assert load_run_config([f"attention={name}"]).attention == PRESETS[name][0]


@pytest.mark.parametrize("name", list(MODEL_PRESETS))
def test_model_option_composes_to_the_python_preset(name):
    assert compose_dict([f"model={name}"])["model"] == MODEL_PRESETS[name][0].to_dict()
    if name != "hf":  # its sizes come from the checkpoint's config.json (tests/hf/test_train.py)
        assert load_run_config([f"model={name}"]).model == MODEL_PRESETS[name][0]


def test_a_preset_field_overrides_like_a_yaml_field():
    # kq layers 6 and 18 need a model that deep (24 layers): with the 4-layer default the spec is refused.
    spec = load_run_config(["model=880m", "attention=mta", "attention.kq_pre=[4,9]",
                            "attention.kq_layers=[6,18]"]).attention
    assert (spec.kq_pre, spec.kq_post, spec.kq_layers, spec.gate) == ((4, 9), (6, 11), (6, 18), "scalar")
    assert load_run_config(["model=880m", "model.n_layers=12"]).model.n_layers == 12


# Every recipe x the choices it is meant for, with the name it gives (the old per-grid experiment files' names).
RECIPES = (
    [(["experiment=paper", f"model={m}", f"attention={a}"], f"paper_{m}_{a}") for m in PAPER_SIZES for a in VARIANTS]
    + [(["experiment=tiny", f"attention={a}"], f"tiny_{a}") for a in VARIANTS]
    + [(["experiment=toy", f"data.toy_n={n}", f"data.toy_variant={v}",
         f"attention={'toy_mta_n' + str(n) if m == 'mta' else 'toy_transformer'}"], f"toy_n{n}_{v}_{m}")
       for n in (5, 8) for v in ("all", "first", "last") for m in ("transformer", "mta")]
    + [(["experiment=paper"], "paper_880m_transformer"), (["experiment=tiny"], "tiny_transformer"),
       (["experiment=toy"], "toy_n5_all_transformer")]
)


@pytest.mark.parametrize(("overrides", "name"), RECIPES, ids=[name for _, name in RECIPES])
def test_every_recipe_composes_validates_and_names_the_run(overrides, name):
    config = load_run_config(overrides)
    assert config.name == name
    config.attention.check_model(n_heads=config.model.n_heads, n_layers=config.model.n_layers)


def test_paper_and_toy_experiments_match_the_spec():
    toy = load_run_config(["experiment=toy", "data.toy_n=8", "data.toy_variant=first", "attention=toy_mta_n8"])
    assert toy.data.toy_n == 8 and toy.data.toy_variant == "first" and toy.attention.kq_pre == (2, 15)
    assert (toy.optim.lr, toy.optim.weight_decay, toy.optim.schedule) == (1e-4, 0.0, "constant")
    assert toy.train.batch_size == 64 and toy.data.kind == "toy" and toy.attention.dropout == 0.1
    assert toy.model.dim == 256 and toy.model.n_layers == 4 and toy.model.n_heads == 2 and toy.model.hidden == 768
    paper = load_run_config(["experiment=paper", "model=880m", "attention=mta"])
    assert paper.model.dim == 1536 and paper.attention_name == "mta" and paper.train.seq_len == 2048
    assert (paper.optim.lr, paper.optim.warmup_steps, paper.optim.betas) == (1.5e-4, 375, (0.9, 0.98))
    assert paper.train.token_budget == 105_000_000_000 and paper.optim.schedule == "linear"


@pytest.mark.parametrize("size", PAPER_SIZES)
def test_the_paper_recipe_keeps_its_per_size_settings(size):
    warmup = load_run_config(["experiment=paper", f"model={size}"]).optim.warmup_steps
    assert warmup == (187 if size == "1b" else 375)  # spec §4: 187 warmup steps for 1B
    # the command line still wins over a per-size setting, and other recipes are untouched by it
    assert load_run_config(["experiment=paper", f"model={size}", "optim.warmup_steps=5"]).optim.warmup_steps == 5
    assert load_run_config(["experiment=tiny", f"model={size}"]).optim.warmup_steps == 20


@pytest.mark.parametrize("option", options("experiment_size"))
def test_every_experiment_size_file_is_reached_by_its_experiment_and_model(option):
    experiment, model = option.split("_", 1)
    assert experiment in options("experiment") and model in MODEL_PRESETS
    with_size = compose_dict([f"experiment={experiment}", f"model={model}"])
    assert with_size["_choices"]["experiment_size@_global_"] == option


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.foo=1"], "Could not override 'train.foo'"),
        (["+train.foo=1"], "train: unknown field(s) foo"),
        (["model=nope"], "Could not find 'model/nope' Available options in 'model': 1b 300m 550m 880m hf tiny"),
        (["attention=nope"], "Available options in 'attention': diff mta t5_all_depth"),
        (["experiment=paper_880m_mta"], "Could not find 'experiment/paper_880m_mta' Available options in "
                                        "'experiment': paper tiny toy"),
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
        (["trainr.max_steps=5"], "trainr.max_steps=5: no config key trainr.max_steps; did you mean train.max_steps?"),
        (["train.max_stpes=5"], "did you mean train.max_steps?"),
        (["train.max_steps=", "5"], "override '5' is not KEY=VALUE; a space after '=' split train.max_steps= 5 in "
                                    "two: write train.max_steps=5"),
        (["attention"], "override 'attention' is not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=None) as info:
        load_run_config(overrides)
    assert message in " ".join(str(info.value).split())


def test_an_unparsable_override_is_one_message_without_hydras_lexer_exception():
    with pytest.raises(ConfigError) as info:
        load_run_config(["train.max_steps=", "5"])
    assert "LexerNoViableAltException" not in str(info.value) and "\n" not in str(info.value)


def test_every_shipped_yaml_is_covered():
    shipped = {p.relative_to(CONF_DIR).as_posix() for p in Path(CONF_DIR).rglob("*.yaml")}
    covered = {"config.yaml"} | {f"{g}/{o}.yaml" for g in [*GROUPS, "experiment", "experiment_size"]
                                 for o in options(g)}
    covered |= {f"cluster/{o}.yaml" for o in options("cluster")}  # not composed: tests/sweep/test_cluster_profiles.py
    assert shipped == covered
    assert {o.split("=")[1] for ov, _ in RECIPES for o in ov if o.startswith("experiment=")} == set(
        options("experiment")), "every experiment recipe is in RECIPES"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_the_conf_tree_is_the_packaged_one_unless_mta_lab_conf_dir_says_otherwise(tmp_path, monkeypatch):
    import mta_lab

    assert (Path(mta_lab.__file__).parent / "conf_data").resolve() == CONF_DIR  # package data (a link in a checkout)
    mine = tmp_path / "conf"
    shutil.copytree(CONF_DIR, mine)
    (mine / "optim" / "mine.yaml").write_text((CONF_DIR / "optim" / "tiny.yaml").read_text().replace("3.0e-3", "0.5"))
    monkeypatch.setenv("MTA_LAB_CONF_DIR", str(mine))
    assert load_run_config(["optim=mine", "attention=mta"]).optim.lr == 0.5  # presets still registered
    monkeypatch.setenv("MTA_LAB_CONF_DIR", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no Hydra config tree at .*empty.*set MTA_LAB_CONF_DIR"):
        load_run_config([])
