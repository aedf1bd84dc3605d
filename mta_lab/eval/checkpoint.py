"""Load a trained model for evaluation from a run directory, a `final/model.pt` export or a Lightning checkpoint.

A model=hf run's files rebuild its Hugging Face Llama (`mta_lab.hf.restore`); a Hugging Face checkpoint directory
(its `final/hf`, or any directory with a config.json that `mta_lab.hf.load_model` reads) loads through transformers,
its run's data config and step read from the `model.pt` beside it.

Every checkpoint file is opened with `torch.load(weights_only=True)`: tensors and plain data only (what training
writes: the configs are dicts of builtins), so a shared file cannot run code on the reader's machine.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from mta_lab.attention.spec import AttentionSpec
from mta_lab.errors import UsageError
from mta_lab.model.config import ModelConfig
from mta_lab.model.transformer import build_model


class UnsafeCheckpoint(UsageError):
    """A checkpoint file holds pickled objects beyond tensors and plain data."""


def load_checkpoint_file(path: str | Path, map_location="cpu", *, mmap: bool = False, label: str | None = "ckpt"):
    """`torch.load(path, weights_only=True)`; a file whose pickle names other objects (code that unpickling would
    run) is refused with `UnsafeCheckpoint` (its message starts `<label>=<path>: `), before anything of it runs.
    Other failures propagate."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:
            raise  # no foreign object named: junk or damage, which the caller reports as unreadable
        what = f"the object {found.group(1)}"
        raise UnsafeCheckpoint(
            f"{f'{label}={path}: ' if label else ''}refused: it carries {what}, which loading would execute "
            "(mta-lab loads checkpoints with "
            "torch.load(weights_only=True): tensors and plain data only); use a checkpoint written by mta-lab "
            "training, or re-export the weights from a source you trust"
        ) from None


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, payload with "model", "attention", "data" config dicts and "step")."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        return _load_hf_directory(path)
    if path.is_dir() and (path / "final" / "model.pt").is_file():
        path = path / "final" / "model.pt"
    if not path.is_file():
        raise UsageError(f"ckpt={path}: not a file; give a run directory, its final/model.pt, its final/hf (model=hf) "
                         "or a checkpoints/*.ckpt file (sharded FSDP checkpoint directories: use the run's "
                         "final/model.pt)")
    raw = _read(path, map_location)
    if "mta_configs" in raw:  # a Lightning checkpoint of LanguageModelTask
        payload = {**raw["mta_configs"], "step": raw.get("global_step")}
        state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    elif {"model", "attention", "state_dict"} <= set(raw):
        payload, state = raw, raw["state_dict"]
    else:
        raise UsageError(f"ckpt={path}: not an mta-lab checkpoint (no model/attention configs inside)")
    state = {k.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", ""): v for k, v in state.items()}
    if payload["model"].get("source") == "hf":  # a model=hf run: its Hugging Face Llama with MTA
        from mta_lab.hf.restore import from_state

        return from_state(payload, state, str(path)), payload
    model = build_model(ModelConfig.from_dict(payload["model"]), AttentionSpec.from_dict(payload["attention"]))
    model.load_state_dict(state)
    return model.eval(), payload


def _read(path: Path, map_location: str = "cpu", *, mmap: bool = False) -> dict:
    try:
        raw = load_checkpoint_file(path, map_location, mmap=mmap)
    except UnsafeCheckpoint:
        raise
    except Exception as err:  # unreadable or not a torch file
        raise UsageError(f"ckpt={path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"ckpt={path}: not an mta-lab checkpoint (no model/attention configs inside)")
    return raw


def _load_hf_directory(path: Path) -> tuple[nn.Module, dict]:
    """A Hugging Face checkpoint directory. Beside a run's final/model.pt (final/hf), the run's data config and step
    come from that file; a directory on its own (e.g. a downloaded Llama) uses its tokenizer.json, if it has one."""
    from mta_lab.hf.restore import load_directory

    model = load_directory(path)
    payload = {"model": model.config.to_dict(), "attention": model.spec.to_dict(), "data": None, "step": None}
    beside = path.parent / "model.pt"
    if beside.is_file():
        raw = _read(beside, mmap=True)
        payload |= {"data": raw.get("data"), "step": raw.get("step")}
    elif (path / "tokenizer.json").is_file():
        payload["data"] = {"kind": "text", "tokenizer": str(path / "tokenizer.json")}
    return model, payload
