"""Load a local Llama checkpoint with MTA (`load_model`) and save one (`save_model`, i.e. `save_pretrained`).

A directory written by `save_model` holds the Llama weights plus every layer's `self_attn.mta.*` tensors
(safetensors) and the spec in config.json (`mta_attention`). `load_model` reads it back: transformers'
`from_pretrained` loads the Llama weights (the MTA tensors are unknown to it), `attach` adds the MTA modules and
their tensors are then loaded from the same files. A plain Llama directory (no `mta_attention`) gets the spec's
freshly initialised MTA parameters: a retrofit.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mta_lab.attention.spec import AttentionSpec
from mta_lab.hf.attach import attach, check_llama, check_spec, saved_spec
from mta_lab.hf.requirements import HFError, require_transformers


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return sorted(path.glob("*.safetensors"))


def read_config(path: str | Path):
    """The checked LlamaConfig of a local checkpoint directory (HFError naming the problem otherwise)."""
    require_transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise HFError(f"model.path={str(path)!r}: no config.json there; give the local directory of a Hugging Face "
                      "checkpoint (the folder holding config.json and *.safetensors, e.g. a downloaded "
                      "meta-llama/Llama-3.2-1B snapshot)")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    check_llama(config)
    if not _weight_files(path):
        raise HFError(f"model.path={str(path)!r}: no *.safetensors weights there; save the model with "
                      "save_pretrained (safetensors, the default)")
    return config


def resolve_spec(config, spec: AttentionSpec | None) -> AttentionSpec:
    """The spec to run: a saved model's own, or `spec` for a plain checkpoint; a saved one differing is an error."""
    saved = saved_spec(config)
    if saved is not None and spec is not None and saved != spec:
        raise HFError(f"the checkpoint was saved with attention {saved.to_dict()} but {spec.to_dict()} was asked; "
                      "use the saved spec (leave attention unset) or retrofit from the plain Llama checkpoint")
    chosen = saved or spec or AttentionSpec()
    check_spec(chosen, config)
    return chosen


def load_model(path: str | Path, spec: AttentionSpec | None = None, *, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu"):
    """A LlamaForCausalLM from the local directory `path`, with MTA attached (see the module docstring)."""
    config = read_config(path)
    spec = resolve_spec(config, spec)
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the MTA tensors are "unexpected" to from_pretrained: loaded below
    try:
        # use_kernels=False: transformers 5 may otherwise swap in hub kernels (no hub here, and not our op).
        model = LlamaForCausalLM.from_pretrained(path, dtype=dtype, use_kernels=False, local_files_only=True,
                                                 attn_implementation="sdpa")
    finally:
        logging.set_verbosity(verbosity)
    model.to(device)
    attach(model, spec)
    if saved_spec(config) is not None:
        _load_mta_tensors(model, Path(path))
    return model


def _load_mta_tensors(model, path: Path) -> None:
    from safetensors.torch import load_file

    wanted = {name for name, _ in model.named_parameters() if ".mta." in name}
    found = {}
    for file in _weight_files(path):
        found.update({k: v for k, v in load_file(str(file)).items() if ".mta." in k})
    missing, unknown = sorted(wanted - set(found)), sorted(set(found) - wanted)
    if missing or unknown:
        raise HFError(f"{path}: the MTA tensors do not match the saved spec (missing: {missing[:3]}, unknown: "
                      f"{unknown[:3]}); the directory was changed after save_model: save it again")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in found.items():
            if params[name].shape != value.shape:
                raise HFError(f"{path}: tensor {name} has shape {tuple(value.shape)}, the spec needs "
                              f"{tuple(params[name].shape)}")
            params[name].copy_(value)


def save_model(model, path: str | Path) -> None:
    """`save_pretrained` (safetensors): Llama weights, MTA tensors and the spec in config.json."""
    model.save_pretrained(path)


def model_config_of(path: str | Path):
    """`ModelConfig(source="hf", path=path)` with the sizes of the checkpoint at `path` (`model_config_from`)."""
    return model_config_from(read_config(path), path)


def model_config_from(config, path: str | Path | None):
    """`ModelConfig(source="hf", path=path)` with the sizes of the LlamaConfig `config` (for accounting, tags and
    length checks; the parameter counts assume the native layout: grouped-query and untied heads are not counted
    exactly)."""
    from mta_lab.model.config import ModelConfig

    rope = getattr(config, "rope_parameters", None) or {}
    return ModelConfig(
        vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads, ffn_hidden=config.intermediate_size,
        rope_theta=float(rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10_000.0),
        norm_eps=float(config.rms_norm_eps), max_seq_len=config.max_position_embeddings, source="hf",
        path=str(Path(path).resolve()) if path is not None else None,
    )
