"""Compose a run's config with Hydra (composition only, no @hydra.main) and validate it into a RunConfig.

The config tree is `conf/` of the repository, shipped inside the package as `mta_lab/conf_data` (a link to
`../conf` in a checkout, real files in a wheel); $MTA_LAB_CONF_DIR overrides it. Overrides use Hydra's grammar:
`model=880m attention=mta train.max_steps=500 experiment=paper`.

The groups `attention` and `model` have no YAML files: their options are the Python presets
(mta_lab.attention.presets.PRESETS, mta_lab.model.config.MODEL_PRESETS), registered in Hydra's ConfigStore
before every composition, one node per preset. Recipes may name runs by interpolation: `${hydra:runtime.choices.
model}` is the chosen model preset; a recipe's top-level keys that start with `_` are its local helpers, dropped
once the config is resolved.
"""

from __future__ import annotations

import os
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from mta_lab.train.config import ConfigError, RunConfig

CONF_DIR = Path(str(files("mta_lab").joinpath("conf_data"))).resolve()
PRESET_GROUPS = ("attention", "model")  # groups whose options come from Python, not from conf/


def conf_dir() -> Path:
    path = Path(os.environ.get("MTA_LAB_CONF_DIR", CONF_DIR))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"no Hydra config tree at {path} (expected {path}/config.yaml); reinstall mta-lab "
                          "(the wheel ships conf/ as mta_lab/conf_data) or set MTA_LAB_CONF_DIR to a conf/ folder")
    return path


def register_presets() -> None:
    """Store every attention and model preset as a Hydra config node (`attention=mta`, `model=880m`)."""
    from hydra.core.config_store import ConfigStore

    from mta_lab.attention.presets import PRESETS
    from mta_lab.model.config import MODEL_PRESETS

    store = ConfigStore.instance()
    for name, (spec, _) in PRESETS.items():
        store.store(group="attention", name=name, node=spec.to_dict(), provider="mta_lab.attention.presets")
    for name, (config, _) in MODEL_PRESETS.items():
        store.store(group="model", name=name, node=config.to_dict(), provider="mta_lab.model.config")


def group_options(group: str) -> list[str]:
    """The options Hydra offers for a config group (YAML files and registered presets), sorted."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_presets()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    finally:
        GlobalHydra.instance().clear()


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as plain containers, with the chosen group options under `_choices`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    register_presets()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)  # for ${hydra:runtime.choices.X} in recipes
            choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"config overrides {' '.join(overrides) or '(none)'}: {message}") from None
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    data = {key: value for key, value in data.items() if not key.startswith("_")}
    data["_choices"] = choices
    return data


def load_run_config(overrides: list[str] | tuple[str, ...] = (), *, stamp: str | None = None) -> RunConfig:
    """The validated RunConfig. A run without a name (no `name=`, no experiment) is named
    `<model>-<attention>-<stamp>`, the stamp defaulting to the current date and time."""
    data = compose_dict(overrides)
    choices = data.pop("_choices")
    if data.get("name") is None:
        data["name"] = f"{choices.get('model')}-{choices.get('attention')}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"
    data.setdefault("model_name", choices.get("model", "custom"))
    data.setdefault("attention_name", choices.get("attention", "custom"))
    data.setdefault("data_name", choices.get("data", "custom"))
    return RunConfig.from_dict(data)
