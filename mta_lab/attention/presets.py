"""Named attention presets: the paper's variants (mta-spec.md §2-3, §5, §7).

The paper's kq-conv layers are every 4th layer from index 2 ("every:4:2" = 2, 6, 10, ...). Post-softmax
grouped head mixing with c_h = H is written head_post="full" so one preset fits every model size.
Table 5 rows are named `t5_*`; the spec lists them as (kq pre, kq post, head pre, head post, norm) -> PPL.
PRESETS is the one source of these presets: mta_lab.conf registers each as the Hydra option `attention=<name>`
(there are no conf/attention/*.yaml files); the descriptions feed `mta-lab attention list`.
"""

from __future__ import annotations

from dataclasses import replace

from mta_lab.attention.spec import AttentionSpec, SpecError

PAPER_KQ_LAYERS = "every:4:2"

_MTA = AttentionSpec(
    kind="mta",
    kq_pre=(6, 11),
    kq_post=(6, 11),
    head_pre=True,
    head_post="full",
    group_norm="rms",
    gate="scalar",
    kq_layers=PAPER_KQ_LAYERS,
)


def _toy_mta(n: int) -> AttentionSpec:
    # Toy task (§5): pre-softmax kq conv only, c_q = 2, c_k = 2N - 1, all layers, no mixing, no norm.
    return AttentionSpec(kind="mta", kq_pre=(2, 2 * n - 1), kq_layers="all", dropout=0.1)


def _kq_only(c_q: int, c_k: int) -> AttentionSpec:
    return AttentionSpec(kind="mta", kq_pre=(c_q, c_k), group_norm="rms_depth", kq_layers=PAPER_KQ_LAYERS)


PRESETS: dict[str, tuple[AttentionSpec, str]] = {
    "transformer": (AttentionSpec(), "plain causal softmax attention (fused SDPA)"),
    "mta": (_MTA, "paper's main MTA: kq pre+post 6x11 on layers 2,6,10..; head mix pre+post; norm; scalar gate"),
    "talking_heads": (
        AttentionSpec(kind="talking_heads", head_pre=True, head_post="full"),
        "Talking heads: pre- and post-softmax HxH head mixing on every layer",
    ),
    "diff": (AttentionSpec(kind="diff"), "DIFF Transformer: H/2 heads of width 2d, difference of two softmaxes"),
    # Table 5 ablations (880M): all components with the two normalisation choices ...
    "t5_all_gate": (_MTA, "Table 5: all components + group norm + scalar gating (PPL 10.90)"),
    "t5_all_depth": (
        replace(_MTA, group_norm="rms_depth", gate="none"),
        "Table 5: all components + group norm with depth scaling (PPL 10.92)",
    ),
    # ... without the post-softmax kq conv ...
    "t5_no_kqpost_gate": (
        replace(_MTA, kq_post=None),
        "Table 5: no post-softmax kq conv, group norm + scalar gating (PPL 10.95)",
    ),
    "t5_no_kqpost_nonorm": (
        replace(_MTA, kq_post=None, group_norm="none", gate="none"),
        "Table 5: no post-softmax kq conv, no group norm (PPL 10.99)",
    ),
    # ... pre-softmax kq conv with post-softmax head mixing only ...
    "t5_kqpre_headpost": (
        AttentionSpec(kind="mta", kq_pre=(6, 11), head_post="full", group_norm="rms_depth", kq_layers=PAPER_KQ_LAYERS),
        "Table 5: pre-softmax kq conv + post-softmax head mixing, depth-scaled norm (PPL 11.09-11.16)",
    ),
    # ... and the kernel-size rows (kq conv only, depth-scaled group norm).
    "t5_kq_4x9": (_kq_only(4, 9), "Table 5: pre-softmax kq conv 4x9 only, depth-scaled norm (PPL 11.23)"),
    "t5_kq_6x11": (_kq_only(6, 11), "Table 5: pre-softmax kq conv 6x11 only, depth-scaled norm (PPL 11.23)"),
    "t5_kq_8x13": (_kq_only(8, 13), "Table 5: pre-softmax kq conv 8x13 only, depth-scaled norm (PPL 11.31)"),
    "toy_mta_n5": (_toy_mta(5), "toy task MTA (Table 1), N=5: pre-softmax kq conv 2x9, all layers"),
    "toy_mta_n8": (_toy_mta(8), "toy task MTA (Table 1), N=8: pre-softmax kq conv 2x15, all layers"),
    "toy_transformer": (AttentionSpec(dropout=0.1), "toy task Transformer (Table 1): attention dropout 0.1"),
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def load_preset(name: str, **overrides) -> AttentionSpec:
    """The preset `name`, optionally with fields overridden (validated again)."""
    if name not in PRESETS:
        raise SpecError(f"attention preset {name!r} is unknown; available: {', '.join(PRESETS)}")
    spec = PRESETS[name][0]
    return AttentionSpec.from_dict({**spec.to_dict(), **overrides}) if overrides else spec
