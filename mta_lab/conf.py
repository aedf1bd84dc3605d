"""Compose a run's config with Hydra (composition only, no @hydra.main) and validate it into a RunConfig.

The config tree is `conf/` at the project root (override with $MTA_LAB_CONF_DIR). Overrides use Hydra's
grammar: `model=880m attention=mta train.max_steps=500 +experiment=...`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from mta_lab.train.config import ConfigError, RunConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def conf_dir() -> Path:
    path = Path(os.environ.get("MTA_LAB_CONF_DIR", CONF_DIR))
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"no Hydra config tree at {path} (expected {path}/config.yaml); install mta-lab from a "
                          "checkout with `pip install -e .` or set MTA_LAB_CONF_DIR")
    return path


def compose_dict(overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The composed config as plain containers, with the chosen group options under `_choices`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
            choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"config overrides {' '.join(overrides) or '(none)'}: {message}") from None
    finally:
        GlobalHydra.instance().clear()
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
