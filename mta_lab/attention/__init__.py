"""The attention library: one validated spec, the reference op, its backends, the layers and their decoding cache."""

from mta_lab.attention.decoding import DecodeCache, LayerCache, StaticLayerCache
from mta_lab.attention.layers import (
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
    "DecodeCache",
    "DiffAttention",
    "LayerCache",
    "StaticLayerCache",
    "MultiTokenAttention",
    "SoftmaxAttention",
    "SpecError",
    "build_attention",
    "expected_extra_parameters",
    "load_preset",
    "multi_token_attention",
    "preset_names",
]
