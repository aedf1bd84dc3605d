"""What backend="auto" runs: one ordered table of rules, the first whose condition holds and whose backend is
usable (installed and running on the device) wins; an unusable backend falls through to the next rule.

The conditions read the call: which of the op's weights are present (kq_pre, kq_post, head_pre, head_post),
whether it has dropout, and two hints the layer adds (`HINTS`): the size of its score map (B·H·T²) and whether
torch.compile is tracing it. "chunked" (linear memory for every option, slower) is never chosen: pin it.
Each rule's condition is a subset of the calls its backend implements (tests/attention/backends/test_policy.py).
Pure: this module imports no backend and no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

OP_OPTIONS = ("kq_pre", "head_pre", "kq_post", "head_post")
HINTS = ("score_elements", "compiling")

# Below this many scores (B·H·T²) the materialised "stacked" backend is faster on an H200 (bf16, H 16, d 96,
# 6x11: 47 vs 60 ms fwd+bwd at T 4096, reports/bench/attention-h200-kq_pre-32k.md) and fits easily; above it,
# FlexAttention's linear memory wins (stacked needs ~5 float32 maps of this size). Under torch.compile the
# compiled "stacked" backend also beats the Triton kernels on such maps (880M, T 2048: 0.695x vs 0.421x the
# Transformer's tokens/s, reports/bench/train-h200-880m-fast.md).
MATERIALISE_UP_TO = 2**29
# Above this many scores (B·H·T², known) "triton_mix"'s within-call T² maps (~12 bytes a score: 48 GiB at B 1,
# H 16, T 16K) no longer fit beside a model, and head-mixing-only layers go to "triton_flashmix" (linear memory;
# 1.4-1.6x slower than triton_mix where both run, reports/bench/attention-h200-talking_heads-flashmix.md).
STREAM_MIXING_ABOVE = 2**32


@dataclass(frozen=True)
class Call:
    """What the policy looks at in one call of the op."""

    kq_pre: bool = False
    kq_post: bool = False
    head_pre: bool = False
    head_post: bool = False
    dropout: bool = False
    score_elements: int | None = None  # None: unknown, taken as large
    compiling: bool = False

    @classmethod
    def of(cls, options: Mapping) -> Call:
        """From the op's keyword arguments (weights or None, dropout_p) plus the hints."""
        return cls(**{k: options.get(k) is not None for k in OP_OPTIONS}, dropout=bool(options.get("dropout_p")),
                   score_elements=options.get("score_elements"), compiling=bool(options.get("compiling")))

    @property
    def kq_pre_only(self) -> bool:
        return self.kq_pre and not (self.kq_post or self.head_pre or self.head_post)

    @property
    def mixes_heads_only(self) -> bool:
        return (self.head_pre or self.head_post) and not (self.kq_pre or self.kq_post)

    @property
    def huge_map(self) -> bool:
        return self.score_elements is not None and self.score_elements > STREAM_MIXING_ABOVE

    @property
    def small_map(self) -> bool:
        return self.score_elements is not None and self.score_elements <= MATERIALISE_UP_TO


@dataclass(frozen=True)
class Rule:
    backend: str
    when: str  # the condition, in words
    holds: Callable[[Call], bool]


RULES = (
    Rule("triton", "kq_pre only, no dropout; not a small map under torch.compile",
         lambda c: c.kq_pre_only and not c.dropout and not (c.compiling and c.small_map)),
    Rule("flex", "kq_pre only, no dropout, a large map",
         lambda c: c.kq_pre_only and not c.dropout and not c.small_map),
    Rule("triton_flashmix", "head mixing only (head_pre and/or head_post), no dropout, a map above 2^32 scores",
         lambda c: c.mixes_heads_only and not c.dropout and c.huge_map),
    Rule("triton_mix", "head mixing only (head_pre and/or head_post), no dropout",
         lambda c: c.mixes_heads_only and not c.dropout),
    Rule("triton_conv", "kq_post (with anything else, dropout included)", lambda c: c.kq_post),
    Rule("stacked", "kq_pre (with anything else, dropout included)", lambda c: c.kq_pre),
    Rule("eager", "any call", lambda c: True),
)
SMALL_MAP = f"B·H·T² <= {MATERIALISE_UP_TO:_} scores (2^29)"


def kq_pre_only(options: Mapping) -> bool:
    """The calls "flex" and "triton" implement: a pre-softmax kq conv and no other option, without dropout."""
    call = Call.of(options)
    return call.kq_pre_only and not call.dropout


def mixing_only(options: Mapping) -> bool:
    """The calls "triton_mix" and "triton_flashmix" implement: head mixing (pre, post or both), no kq conv, without
    dropout."""
    call = Call.of(options)
    return call.mixes_heads_only and not call.dropout


def choose(options: Mapping, usable: Collection[str]) -> str:
    """The backend "auto" runs for a call with `options`, given the names of the backends `usable` here."""
    call = Call.of(options)
    for rule in RULES:
        if rule.backend in usable and rule.holds(call):
            return rule.backend
    raise RuntimeError(f"no attention backend is usable for this call (usable here: {', '.join(usable) or 'none'})")


def preference(backend: str) -> int:
    """The position of `backend`'s rule in `RULES` (len(RULES) for a backend "auto" never picks)."""
    return next((i for i, rule in enumerate(RULES) if rule.backend == backend), len(RULES))
