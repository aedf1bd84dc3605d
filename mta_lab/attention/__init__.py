"""The attention library: one validated spec, the reference op, its backends and the layers."""

from mta_lab.attention.modules import (
    AttentionBase,
    DiffAttention,
    MultiTokenAttention,
    SoftmaxAttention,
    build_attention,
    expected_extra_parameters,
)
from mta_lab.attention.presets import PRESETS, load_preset, preset_names
from mta_lab.attention.reference import multi_token_attention
from mta_lab.attention.spec import AttentionSpec, SpecError

__all__ = [
    "PRESETS",
    "AttentionBase",
    "AttentionSpec",
    "DiffAttention",
    "MultiTokenAttention",
    "SoftmaxAttention",
    "SpecError",
    "build_attention",
    "expected_extra_parameters",
    "load_preset",
    "multi_token_attention",
    "preset_names",
]
