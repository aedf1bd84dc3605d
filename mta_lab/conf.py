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


GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"


def check_override_syntax(overrides: list[str] | tuple[str, ...]) -> None:
    """Each override parses on its own (Hydra's grammar), else one message naming it; a value split off by a space
    after `=` (`train.max_steps= 5`, two shell words) is named as such, with the joined override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for i, override in enumerate(overrides):
        try:
            parser.parse_overrides([override])
        except HydraException as err:
            before = overrides[i - 1] if i else ""
            if "=" not in override:
                message = f"override {override!r} is not KEY=VALUE"
                if before.endswith("=") and before.count("=") == 1:
                    message += (f"; a space after '=' split {before} {override} in two: write {before}{override} "
                                "(no space), or quote the value")
                else:
                    message += f" (e.g. {override}=VALUE, or a group choice like model=tiny)"
                raise ConfigError(message) from None
            detail = " ".join(str(err).split("See https://")[0].split())
            raise ConfigError(f"override {override!r} could not be parsed ({detail}); check its brackets and quotes "
                              f"(the grammar: {GRAMMAR})") from None


def _config_keys() -> list[str]:
    """Every dotted key of the default config (sections and their fields), for "did you mean" suggestions."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    def walk(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        keys = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys += [path, *walk(value, f"{path}.")]
        return keys

    register_presets()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config")
            return [k for k in walk(OmegaConf.to_container(cfg, resolve=False), "") if not k.startswith("_")]
    finally:
        GlobalHydra.instance().clear()


def _unknown_key_message(err: Exception, overrides: list[str] | tuple[str, ...]) -> str | None:
    """`trainr.max_steps=5`: "did you mean train.max_steps?" when a config key is close; None otherwise."""
    import difflib
    import re

    found = re.search(r"Could not override '([^']+)'", str(err))
    if not found:
        return None
    key = found.group(1)
    close = difflib.get_close_matches(key, _config_keys(), n=1, cutoff=0.8)
    if not close or close[0] == key:  # the key exists: Hydra refused the value (e.g. a new key in a mapping)
        return None
    given = next((o for o in overrides if o.split("=", 1)[0] == key), key)
    return f"{given}: no config key {key}; did you mean {close[0]}?"


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as plain containers, with the chosen group options under `_choices`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    check_override_syntax(overrides)
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
        failed = err
    else:
        failed = None
    finally:
        HydraConfig.instance().cfg = None
        GlobalHydra.instance().clear()
    if failed is not None:
        suggestion = _unknown_key_message(failed, overrides)
        message = " ".join(str(failed).split())
        raise ConfigError(suggestion or f"config overrides {' '.join(overrides) or '(none)'}: {message}") from None
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
