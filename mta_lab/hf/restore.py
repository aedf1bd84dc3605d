"""A trained model=hf run's model, rebuilt from an mta-lab checkpoint (`final/model.pt` or a Lightning
`checkpoints/*.ckpt`), for `mta-lab eval` and `mta-lab generate` (through `mta_lab.eval.checkpoint.load_model`).

Those files hold the configs, the weights as `HFLanguageModel.state_dict()` (`hf.model.layers.0...`, MTA tensors
included) and the transformers config as JSON (`hf_config`, written by training): the Llama is built from that
config (no weights read from model.path), MTA attached with the run's spec, then the weights loaded. A checkpoint
without `hf_config` takes the architecture from the config.json at its `model.path`, which must then still exist.
"""

from __future__ import annotations

import json
from pathlib import Path

from mta_lab.attention.spec import AttentionSpec
from mta_lab.hf.attach import attach
from mta_lab.hf.lm import HFLanguageModel
from mta_lab.hf.requirements import HFError, require_transformers
from mta_lab.model.config import ModelConfig

PAYLOAD_KEY = "hf_config"


def hf_config_json(model: HFLanguageModel) -> str:
    """What training stores under `hf_config` beside the weights."""
    return model.hf.config.to_json_string()


def _hf_config(payload: dict, ckpt: str):
    from transformers import LlamaConfig

    stored = payload.get(PAYLOAD_KEY)
    if stored:
        return LlamaConfig.from_dict(json.loads(stored))
    from mta_lab.hf.checkpoint import read_config

    path = (payload.get("model") or {}).get("path")
    if not path or not (Path(path) / "config.json").is_file():
        raise HFError(f"ckpt={ckpt}: a model=hf checkpoint without its transformers config, and its model.path "
                      f"{path!r} has no config.json any more; put the Llama checkpoint it was trained from back "
                      "there, or use the run's final/hf directory")
    return read_config(path)


def from_state(payload: dict, state: dict, ckpt: str) -> HFLanguageModel:
    """The HFLanguageModel of a model=hf checkpoint's payload (configs) and weights, in eval mode on the CPU."""
    require_transformers(f"ckpt={ckpt} (a model=hf run)")
    from transformers import LlamaForCausalLM

    config = _hf_config(payload, ckpt)
    spec = AttentionSpec.from_dict(payload["attention"])
    hf_model = LlamaForCausalLM(config)  # randomly initialised: every weight is replaced by the checkpoint's below
    attach(hf_model, spec)
    model = HFLanguageModel(hf_model, ModelConfig.from_dict(payload["model"]))
    model.load_state_dict(state)
    return model.eval()


def load_directory(path: str | Path) -> HFLanguageModel:
    """A `save_pretrained` directory (a run's final/hf, or a plain local Llama: softmax attention), in eval mode."""
    require_transformers(f"ckpt={path} (a Hugging Face checkpoint directory)")
    return HFLanguageModel.load(str(path), None).eval()
