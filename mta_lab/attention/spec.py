"""AttentionSpec: the one typed, validated description of an attention variant.

Defaults reproduce the plain Transformer. Everything the model needs to build a layer's attention
(which operations, their sizes, initialisation, on which layers) is here; the model dimensions are
checked separately by `check_model`, since one spec is reused across model sizes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mta_lab.errors import UserError
from mta_lab.fields import known_fields

KINDS = ("softmax", "mta", "talking_heads", "diff")
PAD_KEYS = ("both", "left", "right")
HEAD_POST = ("none", "grouped", "full")
GROUP_NORMS = ("none", "rms", "rms_depth")
GATES = ("none", "scalar", "full")
KERNEL_INITS = ("identity", "zero", "const", "uniform", "diagonal")
# The implementations of the op (`attention/backends/`, one module each), fixed here so that a spec's validity does
# not depend on what is installed; whether one runs is checked when a layer resolves it on its device.
BACKEND_NAMES = ("eager", "stacked", "flex", "chunked", "triton", "triton_mix", "triton_flashmix", "triton_conv")
LAYER_SELECTION_FORMS = "'all', 'none', 'every:K' or 'every:K:OFFSET', a pattern of 'x' and '.', or a list of indices"

_EVERY = re.compile(r"^every:(\d+)(?::(\d+))?$")
_PATTERN = re.compile(r"^[x.]+$")


class SpecError(UserError, ValueError):
    """A bad attention spec: the message names the field, the bad value and what is allowed."""


def _fail(field: str, value: Any, problem: str) -> None:
    shown = list(value) if isinstance(value, tuple) else value  # as the user wrote it in YAML
    raise SpecError(f"attention.{field}={shown!r}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def depth_lambda_init(layer_idx: int) -> float:
    """DIFF Transformer's λ_init(l) = 0.8 - 0.6·exp(-0.3·l), l the 0-based layer index."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


def key_center(c_k: int, pad_key: str) -> int:
    """o, the kernel column that reads the same key j (the identity tap's column): column b reads key j - o + b."""
    if pad_key not in PAD_KEYS:
        raise ValueError(f"pad_key={pad_key!r}: must be one of {', '.join(PAD_KEYS)}")
    return {"both": (c_k - 1) // 2, "left": c_k - 1, "right": 0}[pad_key]


@dataclass(frozen=True)
class AttentionSpec:
    """One attention variant. Field names follow `mta-spec.md` §2-3.

    kind: "softmax" (plain causal attention), "mta", "talking_heads", "diff".
    kq_pre / kq_post: (c_q, c_k) of the pre-/post-softmax key-query convolution, or None.
    pad_key: key-axis padding of both convolutions: "both" (c_k odd, centred), "left" (past keys),
        "right" (later keys).
    head_pre: full H×H mixing of the logits (step 3).
    head_post: post-softmax head mixing (step 6): "none", "grouped" (groups of head_post_group
        contiguous heads) or "full" (H×H).
    group_norm: "none", "rms" (RMSNorm per (token, head), one weight shared by the heads) or
        "rms_depth" (the same, times 1 - λ_init(layer)).
    gate: "none", "scalar" (one sigmoid gate per (token, head)) or "full" (one per channel).
    kernel_init: initial kq kernels: "identity", "zero", "const" (kernel_init_value everywhere),
        "uniform" (U(-1, 1)) or "diagonal" (the sequence-matching pattern of the paper's Fig. 4).
    kq_layers: which layers get the kq convolutions; head mixing, norm and gate go on all layers.
    dropout: attention dropout on the final weights, training only.
    backend: implementation of the op ("auto" picks the fastest available for the device).
    """

    kind: str = "softmax"
    kq_pre: tuple[int, int] | None = None
    kq_post: tuple[int, int] | None = None
    pad_key: str = "both"
    head_pre: bool = False
    head_post: str = "none"
    head_post_group: int | None = None
    group_norm: str = "none"
    gate: str = "none"
    kernel_init: str = "identity"
    kernel_init_value: float = 0.3
    kq_layers: str | tuple[int, ...] = "all"
    dropout: float = 0.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        # Hydra/YAML hands over lists; store tuples so the spec stays hashable and frozen.
        for name in ("kq_pre", "kq_post", "kq_layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._validate()

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttentionSpec:
        """Build from a mapping (e.g. a Hydra node); unknown keys are errors."""
        return cls(**known_fields(cls, data, "attention", SpecError))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("kq_pre", "kq_post", "kq_layers"):
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out

    # ------------------------------------------------------------------ derived properties
    @property
    def has_kq_conv(self) -> bool:
        return self.kq_pre is not None or self.kq_post is not None

    @property
    def mixes_scores(self) -> bool:
        """True when some operation needs more than plain softmax attention."""
        return self.has_kq_conv or self.head_pre or self.head_post != "none"

    def head_group_size(self, n_heads: int) -> int | None:
        """c_h of the post-softmax head mixing for a model with n_heads (None without it)."""
        if self.head_post == "full":
            return n_heads
        if self.head_post == "grouped":
            return self.head_post_group
        return None

    def kq_layer_indices(self, n_layers: int) -> tuple[int, ...]:
        """0-based indices of the layers that get the kq convolutions."""
        sel = self.kq_layers
        if not self.has_kq_conv:
            return ()
        if isinstance(sel, tuple):
            return tuple(sorted(sel))
        if sel == "all":
            return tuple(range(n_layers))
        if sel == "none":
            return ()
        every = _EVERY.match(sel)
        if every:
            k, offset = int(every.group(1)), int(every.group(2) or 0)
            return tuple(range(offset, n_layers, k))
        # A pattern string tiled over the layers: "..x." marks layers 2, 6, 10, ...
        return tuple(i for i in range(n_layers) if sel[i % len(sel)] == "x")

    def uses_kq_conv(self, layer_idx: int, n_layers: int) -> bool:
        return layer_idx in self.kq_layer_indices(n_layers)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def one_of(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                _fail(name, value, f"must be one of {', '.join(allowed)}")

        one_of("kind", KINDS)
        one_of("pad_key", PAD_KEYS)
        one_of("head_post", HEAD_POST)
        one_of("group_norm", GROUP_NORMS)
        one_of("gate", GATES)
        one_of("kernel_init", KERNEL_INITS)
        if not isinstance(self.head_pre, bool):
            _fail("head_pre", self.head_pre, "must be true or false")

        for name in ("kq_pre", "kq_post"):
            kernel = getattr(self, name)
            if kernel is None:
                continue
            if (
                not isinstance(kernel, tuple)
                or len(kernel) != 2
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in kernel)
            ):
                _fail(name, kernel, "must be null or a pair [c_q, c_k] of positive integers")
            if self.pad_key == "both" and kernel[1] % 2 == 0:
                _fail(
                    name,
                    kernel,
                    f"c_k={kernel[1]} is even but pad_key='both' centres the key window, which needs an odd "
                    "c_k; use an odd c_k or pad_key='left'/'right'",
                )

        if self.head_post == "grouped":
            c_h = self.head_post_group
            if not isinstance(c_h, int) or isinstance(c_h, bool) or c_h < 1:
                _fail("head_post_group", c_h, "head_post='grouped' needs a group size c_h >= 1")
        elif self.head_post_group is not None:
            _fail(
                "head_post_group",
                self.head_post_group,
                f"is only used with head_post='grouped' (head_post is {self.head_post!r}); remove it "
                "or set head_post='grouped'",
            )

        if not _is_number(self.kernel_init_value):
            _fail("kernel_init_value", self.kernel_init_value, "must be a number")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            _fail("dropout", self.dropout, "must be a number in [0, 1)")
        self._validate_layer_selection()
        self._validate_backend()
        self._validate_kind()

    def _validate_layer_selection(self) -> None:
        sel = self.kq_layers
        if isinstance(sel, tuple):
            if not sel:
                _fail("kq_layers", sel, "an empty list selects no layer; use 'none', or drop kq_pre/kq_post")
            if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in sel):
                _fail("kq_layers", sel, "a list of layers must hold non-negative integer indices")
            duplicates = sorted({i for i in sel if sel.count(i) > 1})
            if duplicates:
                _fail("kq_layers", sel, f"layer index {duplicates[0]} is listed twice; list each layer once")
            return
        if not isinstance(sel, str):
            _fail("kq_layers", sel, f"must be {LAYER_SELECTION_FORMS}")
        if self.has_kq_conv and (sel == "none" or (_PATTERN.match(sel) and "x" not in sel)):
            _fail("kq_layers", sel, "selects no layer although a kq convolution is configured; select layers "
                  "or drop kq_pre/kq_post")
        if sel in ("all", "none") or _PATTERN.match(sel):
            return
        every = _EVERY.match(sel)
        if not every:
            _fail("kq_layers", sel, f"must be {LAYER_SELECTION_FORMS}")
        if int(every.group(1)) < 1:
            _fail("kq_layers", sel, "every:K needs K >= 1")

    def _validate_backend(self) -> None:
        allowed = ("auto", *BACKEND_NAMES)
        if self.backend not in allowed:
            _fail("backend", self.backend, f"must be one of {', '.join(allowed)}")

    def _validate_kind(self) -> None:
        mta_fields = {
            "kq_pre": self.kq_pre is not None,
            "kq_post": self.kq_post is not None,
            "head_pre": self.head_pre,
            "head_post": self.head_post != "none",
            "group_norm": self.group_norm != "none",
            "gate": self.gate != "none",
        }
        if self.kind in ("softmax", "diff"):
            for name, used in mta_fields.items():
                if used:
                    _fail(
                        name,
                        getattr(self, name),
                        f"is an MTA operation, not allowed for kind={self.kind!r}; use kind='mta' "
                        f"(or kind='talking_heads' for head mixing alone)",
                    )
        if self.kind == "talking_heads":
            for name in ("kq_pre", "kq_post"):
                if mta_fields[name]:
                    _fail(name, getattr(self, name), "talking_heads has no key-query convolution; use kind='mta'")
            for name in ("group_norm", "gate"):
                if mta_fields[name]:
                    _fail(name, getattr(self, name), "Talking heads has no group norm and no gate (spec §3); "
                          "use kind='mta' to combine head mixing with them")
            if not (self.head_pre and self.head_post == "full"):
                _fail(
                    "kind",
                    self.kind,
                    "Talking heads is pre-softmax H×H mixing plus post-softmax H×H mixing: set head_pre=true "
                    "and head_post='full' (or use the 'talking_heads' preset, or kind='mta' for other mixes)",
                )

    def check_model(self, *, n_heads: int, n_layers: int) -> None:
        """Checks that need the model's dimensions; raises SpecError naming the field."""
        if self.kind == "diff" and n_heads % 2:
            _fail(
                "kind",
                self.kind,
                f"DIFF attention pairs heads (H/2 heads of twice the width) and needs an even number of "
                f"heads; the model has n_heads={n_heads}",
            )
        c_h = self.head_group_size(n_heads)
        if c_h is not None and n_heads % c_h:
            _fail(
                "head_post_group",
                c_h,
                f"c_h must divide n_heads={n_heads}; allowed: "
                f"{', '.join(str(c) for c in range(1, n_heads + 1) if n_heads % c == 0)}",
            )
        if isinstance(self.kq_layers, tuple):
            bad = [i for i in self.kq_layers if i >= n_layers]
            if bad:
                _fail("kq_layers", self.kq_layers, f"layer index {bad[0]} >= n_layers={n_layers}; "
                      f"allowed indices are 0..{n_layers - 1}")
        elif (every := _EVERY.match(self.kq_layers)) and int(every.group(2) or 0) >= n_layers:
            _fail("kq_layers", self.kq_layers, f"offset >= n_layers={n_layers}: no layer would be selected")
        elif _PATTERN.match(self.kq_layers) and len(self.kq_layers) > n_layers:
            _fail("kq_layers", self.kq_layers, f"the pattern is longer than n_layers={n_layers}; its tail would be "
                  f"ignored: give at most {n_layers} characters")
