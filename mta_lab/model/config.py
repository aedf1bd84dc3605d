"""ModelConfig and the named model presets (LLaMA architecture, spec §4).

MODEL_PRESETS is the one source of the presets: mta_lab.conf registers each as the Hydra option `model=<name>`
(there are no conf/model/*.yaml files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from mta_lab.errors import UserError
from mta_lab.fields import known_fields

PAPER_VOCAB = 128_256  # Llama-3 tokenizer
SOURCES = ("native", "hf")


class ModelConfigError(UserError, ValueError):
    """A bad model config: the message names the field, the bad value and what is allowed."""


def swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """LLaMA's SwiGLU width: 256·ceil((2/3·4D)/256)."""
    return multiple_of * math.ceil(int(2 * 4 * dim / 3) / multiple_of)


@dataclass(frozen=True)
class ModelConfig:
    """A decoder-only LLaMA-style model: pre-norm RMSNorm, SwiGLU, RoPE, no biases, tied embeddings."""

    vocab_size: int = PAPER_VOCAB
    dim: int = 1024
    n_layers: int = 20
    n_heads: int = 16
    ffn_hidden: int | None = None  # None: swiglu_hidden(dim)
    rope_theta: float = 100_000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    init_std: float = 0.02
    # "native": the Transformer of transformer.py; "hf": a local Hugging Face Llama checkpoint at `path` (model=hf;
    # mta_lab/hf), whose config.json then sets the fields above (filled in by the run config, `hf_model_config`).
    source: str = "native"
    path: str | None = None

    def __post_init__(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"model.{name}={value!r}: must be a positive integer")

        for name in ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len"):
            positive(name)
        if self.ffn_hidden is not None:
            positive("ffn_hidden")
        if self.dim % self.n_heads:
            raise ModelConfigError(f"model.n_heads={self.n_heads}: must divide model.dim={self.dim}")
        if self.head_dim % 2:
            raise ModelConfigError(f"model.n_heads={self.n_heads}: head_dim={self.head_dim} must be even for RoPE")
        if self.source not in SOURCES:
            raise ModelConfigError(f"model.source={self.source!r}: must be one of {', '.join(SOURCES)}")
        if self.path is not None and self.source != "hf":
            raise ModelConfigError(f"model.path={self.path!r} applies only to a Hugging Face checkpoint: use "
                                   "model=hf model.path=/local/llama (or drop model.path)")
        for name in ("rope_theta", "norm_eps", "init_std"):
            if not isinstance(getattr(self, name), int | float) or getattr(self, name) <= 0:
                raise ModelConfigError(f"model.{name}={getattr(self, name)!r}: must be a positive number")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        return self.ffn_hidden if self.ffn_hidden is not None else swiglu_hidden(self.dim)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return cls(**known_fields(cls, data, "model", ModelConfigError))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MODEL_PRESETS: dict[str, tuple[ModelConfig, str]] = {
    "tiny": (
        ModelConfig(vocab_size=512, dim=64, n_layers=4, n_heads=4, ffn_hidden=192, max_seq_len=256),
        "seconds on a CPU: D 64, 4 layers, 4 heads",
    ),
    "tiny2": (
        ModelConfig(vocab_size=512, dim=96, n_layers=4, n_heads=4, ffn_hidden=288, max_seq_len=256),
        "CPU scaling twin, size 2: D 96, 4 layers, 4 heads",
    ),
    "tiny3": (
        ModelConfig(vocab_size=512, dim=128, n_layers=4, n_heads=4, ffn_hidden=384, max_seq_len=256),
        "CPU scaling twin, size 3: D 128, 4 layers, 4 heads",
    ),
    "toy": (
        ModelConfig(vocab_size=32, dim=256, n_layers=4, n_heads=2, ffn_hidden=768, max_seq_len=512),
        "the paper's toy-task model (§5): D 256, 4 layers, 2 heads, FFN 768",
    ),
    "hf": (ModelConfig(source="hf"), "a local HF Llama checkpoint: model=hf model.path=/local/dir (extra hf)"),
    "300m": (ModelConfig(dim=1024, n_layers=20, n_heads=16), "paper 300M: D 1024, 20 layers, 16 heads"),
    "550m": (ModelConfig(dim=1280, n_layers=24, n_heads=10), "paper 550M: D 1280, 24 layers, 10 heads"),
    "880m": (ModelConfig(dim=1536, n_layers=24, n_heads=16), "paper 880M (release: 830M): D 1536, 24 layers"),
    "1b": (ModelConfig(dim=2048, n_layers=24, n_heads=16), "paper 1B: D 2048, 24 layers, 16 heads"),
}


def load_model_preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise ModelConfigError(f"model preset {name!r} is unknown; available: {', '.join(MODEL_PRESETS)}")
    config = MODEL_PRESETS[name][0]
    return ModelConfig.from_dict({**config.to_dict(), **overrides}) if overrides else replace(config)
