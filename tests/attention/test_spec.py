"""AttentionSpec validation and the named presets (docs/mta-spec.md, sections 2-4).

Every error test builds a bad spec and checks the whole SpecError contract: the message starts with
`attention.<field>=<bad value as written in YAML>:` and then says what is allowed or how to fix it.
Expected values are written out literally here (not read from spec.py's constants), so a regression in
the constants themselves is caught too.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from mta_lab.attention.presets import PRESETS, load_preset, preset_names
from mta_lab.attention.spec import AttentionSpec, SpecError

FIELDS = (
    "kind",
    "kq_pre",
    "kq_post",
    "pad_key",
    "head_pre",
    "head_post",
    "head_post_group",
    "group_norm",
    "gate",
    "kernel_init",
    "kernel_init_value",
    "kq_layers",
    "dropout",
    "backend",
)
# spec section 4: (D, layers, heads) of the paper's four model sizes, and their kq-conv layers.
PAPER_SIZES = {
    "300M": (1024, 20, 16),
    "550M": (1280, 24, 10),
    "880M": (1536, 24, 16),
    "1B": (2048, 24, 16),
}
PAPER_KQ_LAYERS = {20: (2, 6, 10, 14, 18), 24: (2, 6, 10, 14, 18, 22)}
TOY_SIZE = (256, 4, 2)  # spec section 5
LAYER_FORMS = "'all', 'none', 'every:K' or 'every:K:OFFSET', a pattern of 'x' and '.', or a list of indices"


def err(field: str, shown: str, *parts: str) -> str:
    """Regex for `attention.<field>=<shown>: ...<parts in order>...`."""
    return "^" + re.escape(f"attention.{field}={shown}: ") + "".join(".*" + re.escape(p) for p in parts)


def mta(**kw) -> AttentionSpec:
    return AttentionSpec(kind="mta", **kw)


# ====================================================================================================
# Validation rules of __post_init__
# ====================================================================================================


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("kind", "mta2", "softmax, mta, talking_heads, diff"),
        ("kind", "Softmax", "softmax, mta, talking_heads, diff"),
        ("pad_key", "center", "both, left, right"),
        ("head_post", "grouped_full", "none, grouped, full"),
        ("head_post", None, "none, grouped, full"),
        ("group_norm", "layer", "none, rms, rms_depth"),
        ("gate", "sigmoid", "none, scalar, full"),
        ("kernel_init", "normal", "identity, zero, const, uniform, diagonal"),  # the release crashes on it
        ("kernel_init", "ones", "identity, zero, const, uniform, diagonal"),
    ],
)
def test_unknown_choice_names_field_value_and_choices(field, value, allowed):
    kw = {"kind": "mta", field: value} if field != "kind" else {"kind": value}
    with pytest.raises(SpecError, match=err(field, repr(value), f"must be one of {allowed}") + "$"):
        AttentionSpec(**kw)


@pytest.mark.parametrize(
    ("field", "allowed"),
    [
        ("kind", ("softmax", "mta", "talking_heads", "diff")),
        ("pad_key", ("both", "left", "right")),
        ("head_post", ("none", "grouped", "full")),
        ("group_norm", ("none", "rms", "rms_depth")),
        ("gate", ("none", "scalar", "full")),
        ("kernel_init", ("identity", "zero", "const", "uniform", "diagonal")),
    ],
)
def test_every_documented_choice_is_accepted(field, allowed):
    for value in allowed:
        if field == "kind":
            kw = {"kind": value}
            if value == "talking_heads":
                kw.update(head_pre=True, head_post="full")
        else:
            kw = {"kind": "mta", field: value}
            if field == "head_post" and value == "grouped":
                kw["head_post_group"] = 2
        assert getattr(AttentionSpec(**kw), field) == value


@pytest.mark.parametrize(("value", "shown"), [("yes", "'yes'"), (1, "1"), (None, "None")])
def test_head_pre_must_be_bool(value, shown):
    with pytest.raises(SpecError, match=err("head_pre", shown, "must be true or false")):
        mta(head_pre=value)


@pytest.mark.parametrize("field", ["kq_pre", "kq_post"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ((6,), "[6]"),
        ([6, 11, 3], "[6, 11, 3]"),
        (6, "6"),
        ("6x11", "'6x11'"),
        ((0, 11), "[0, 11]"),
        ((6, -1), "[6, -1]"),
        ((-6, 11), "[-6, 11]"),
        ((True, 11), "[True, 11]"),
        ((6, True), "[6, True]"),
        ((6, 11.0), "[6, 11.0]"),
    ],
)
def test_kq_kernel_must_be_pair_of_positive_ints(field, value, shown):
    with pytest.raises(SpecError, match=err(field, shown, "must be null or a pair [c_q, c_k] of positive integers")):
        mta(**{field: value})


@pytest.mark.parametrize("field", ["kq_pre", "kq_post"])
def test_even_c_k_rejected_with_pad_key_both(field):
    with pytest.raises(
        SpecError,
        match=err(field, "[6, 10]", "c_k=10 is even", "pad_key='both'", "odd", "pad_key='left'/'right'"),
    ):
        mta(**{field: (6, 10)})  # pad_key defaults to "both"
    with pytest.raises(SpecError, match=err(field, "[6, 10]", "c_k=10 is even")):
        mta(**{field: (6, 10)}, pad_key="both")


@pytest.mark.parametrize("field", ["kq_pre", "kq_post"])
@pytest.mark.parametrize("pad_key", ["left", "right"])
def test_even_c_k_accepted_with_one_sided_padding(field, pad_key):
    spec = mta(**{field: (6, 10)}, pad_key=pad_key)
    assert getattr(spec, field) == (6, 10)
    assert spec.pad_key == pad_key


def test_odd_c_k_and_c_q_one_accepted_with_pad_key_both():
    spec = mta(kq_pre=(1, 1), kq_post=(6, 11))
    assert (spec.kq_pre, spec.kq_post) == ((1, 1), (6, 11))


@pytest.mark.parametrize(("value", "shown"), [(None, "None"), (0, "0"), (-2, "-2"), (True, "True"), (2.5, "2.5")])
def test_grouped_head_post_needs_a_valid_group_size(value, shown):
    with pytest.raises(
        SpecError, match=err("head_post_group", shown, "head_post='grouped' needs a group size c_h >= 1")
    ):
        mta(head_post="grouped", head_post_group=value)


@pytest.mark.parametrize("head_post", ["none", "full"])
def test_head_post_group_without_grouped_is_rejected(head_post):
    with pytest.raises(
        SpecError,
        match=err(
            "head_post_group",
            "4",
            "only used with head_post='grouped'",
            f"head_post is {head_post!r}",
            "remove it or set head_post='grouped'",
        ),
    ):
        mta(head_post=head_post, head_post_group=4)


@pytest.mark.parametrize(
    ("value", "shown"), [(-0.1, "-0.1"), (1.0, "1.0"), (1, "1"), (1.5, "1.5"), ("0.1", "'0.1'"), (float("nan"), "nan")]
)
def test_dropout_must_be_in_unit_interval(value, shown):
    with pytest.raises(SpecError, match=err("dropout", shown, "must be a number in [0, 1)")):
        AttentionSpec(dropout=value)


def test_dropout_bounds_accepted():
    assert AttentionSpec(dropout=0.0).dropout == 0.0
    assert AttentionSpec(dropout=0).dropout == 0
    assert AttentionSpec(dropout=0.999).dropout == 0.999


def test_kernel_init_value_must_be_a_number():
    with pytest.raises(SpecError, match=err("kernel_init_value", "'0.3'", "must be a number")):
        mta(kq_pre=(6, 11), kernel_init="const", kernel_init_value="0.3")
    assert mta(kq_pre=(6, 11), kernel_init="const", kernel_init_value=-1).kernel_init_value == -1


@pytest.mark.parametrize(
    ("value", "shown", "problem"),
    [
        ([], "[]", "an empty list selects no layer; use 'none', or drop kq_pre/kq_post"),
        ([2, -1], "[2, -1]", "a list of layers must hold non-negative integer indices"),
        ([-3], "[-3]", "a list of layers must hold non-negative integer indices"),
        ([1.0], "[1.0]", "a list of layers must hold non-negative integer indices"),
        ([True, 2], "[True, 2]", "a list of layers must hold non-negative integer indices"),
        (["2"], "['2']", "a list of layers must hold non-negative integer indices"),
        ([2, 6, 2], "[2, 6, 2]", "layer index 2 is listed twice; list each layer once"),
        ("every:0", "'every:0'", "every:K needs K >= 1"),
        ("every:0:2", "'every:0:2'", "every:K needs K >= 1"),
        ("evry:4", "'evry:4'", f"must be {LAYER_FORMS}"),
        ("every:4:", "'every:4:'", f"must be {LAYER_FORMS}"),
        ("every:-4", "'every:-4'", f"must be {LAYER_FORMS}"),
        ("every:4:2:1", "'every:4:2:1'", f"must be {LAYER_FORMS}"),
        ("every", "'every'", f"must be {LAYER_FORMS}"),
        ("x.y", "'x.y'", f"must be {LAYER_FORMS}"),
        ("X..x", "'X..x'", f"must be {LAYER_FORMS}"),
        ("", "''", f"must be {LAYER_FORMS}"),
        ("All", "'All'", f"must be {LAYER_FORMS}"),
        (4, "4", f"must be {LAYER_FORMS}"),
        (None, "None", f"must be {LAYER_FORMS}"),
    ],
)
def test_malformed_kq_layers(value, shown, problem):
    with pytest.raises(SpecError, match=err("kq_layers", shown, problem)):
        mta(kq_pre=(6, 11), kq_layers=value)


@pytest.mark.parametrize("value", ["all", "every:1", "every:4", "every:4:2", "..x.", "x", [0], (5, 1)])
def test_well_formed_kq_layers_accepted(value):
    mta(kq_pre=(6, 11), kq_layers=value)


def test_backend_must_be_one_of_the_fixed_names():
    allowed = "auto, eager, stacked, flex, chunked, triton, triton_mix, triton_flashmix, triton_conv"
    with pytest.raises(SpecError, match=err("backend", "'flash_mta'", f"must be one of {allowed}") + "$"):
        AttentionSpec(backend="flash_mta")
    with pytest.raises(SpecError, match=err("backend", "'Eager'", "must be one of auto, ")):
        AttentionSpec(backend="Eager")
    for name in allowed.split(", "):
        assert AttentionSpec(backend=name).backend == name


def test_backend_check_does_not_depend_on_what_is_installed():
    # A spec names a backend from the fixed list; whether it is installed is checked where a layer resolves it
    # (tests/attention/backends/test_registry.py). Validating a spec imports no backend module.
    import subprocess
    import sys

    code = ("import sys; from mta_lab.attention.spec import AttentionSpec; "
            "[AttentionSpec(backend=n) for n in ('triton', 'triton_mix', 'triton_flashmix', 'triton_conv', 'flex')]; "
            "print(sorted(m for m in sys.modules if m.startswith('mta_lab.attention.backends.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = eval(out)  # noqa: S307  (a list of module names printed by the child)
    names = ("eager", "stacked", "flex", "chunked", "triton", "triton_mix", "triton_flashmix", "triton_conv")
    assert not [m for m in loaded if m.rsplit(".", 1)[-1] in names], loaded


MTA_ONLY_FIELDS = [
    ("kq_pre", (6, 11), "[6, 11]"),
    ("kq_post", (6, 11), "[6, 11]"),
    ("head_pre", True, "True"),
    ("head_post", "full", "'full'"),
    ("group_norm", "rms", "'rms'"),
    ("group_norm", "rms_depth", "'rms_depth'"),
    ("gate", "scalar", "'scalar'"),
    ("gate", "full", "'full'"),
]


@pytest.mark.parametrize("kind", ["softmax", "diff"])
@pytest.mark.parametrize(("field", "value", "shown"), MTA_ONLY_FIELDS)
def test_mta_fields_rejected_for_softmax_and_diff(kind, field, value, shown):
    with pytest.raises(
        SpecError, match=err(field, shown, "is an MTA operation", f"not allowed for kind={kind!r}", "use kind='mta'")
    ):
        AttentionSpec(kind=kind, **{field: value})
    assert getattr(AttentionSpec(kind="mta", **{field: value}), field) == value  # fine for kind=mta


@pytest.mark.parametrize("kind", ["softmax", "diff"])
def test_grouped_head_post_rejected_for_softmax_and_diff(kind):
    with pytest.raises(SpecError, match=err("head_post", "'grouped'", f"not allowed for kind={kind!r}")):
        AttentionSpec(kind=kind, head_post="grouped", head_post_group=2)


def test_post_softmax_conv_rejected_for_softmax_kind():
    with pytest.raises(
        SpecError, match=err("kq_post", "[6, 11]", "is an MTA operation", "kind='softmax'", "kind='mta'")
    ):
        AttentionSpec(kq_post=(6, 11))  # kind defaults to softmax
    with pytest.raises(SpecError, match=err("kq_post", "[3, 5]", "kind='softmax'")):
        AttentionSpec(kind="softmax", kq_post=[3, 5], pad_key="left")


@pytest.mark.parametrize("field", ["kq_pre", "kq_post"])
def test_talking_heads_rejects_kq_conv(field):
    with pytest.raises(
        SpecError, match=err(field, "[6, 11]", "talking_heads has no key-query convolution", "use kind='mta'")
    ):
        AttentionSpec(kind="talking_heads", head_pre=True, head_post="full", **{field: (6, 11)})


@pytest.mark.parametrize(
    "mixing",
    [
        {"head_pre": False, "head_post": "full"},
        {"head_pre": True, "head_post": "none"},
        {"head_pre": True, "head_post": "grouped", "head_post_group": 2},
        {"head_pre": False, "head_post": "none"},
    ],
)
def test_talking_heads_needs_both_full_head_mixings(mixing):
    with pytest.raises(
        SpecError,
        match=err(
            "kind", "'talking_heads'", "pre-softmax H×H", "post-softmax H×H", "head_pre=true", "head_post='full'"
        ),
    ):
        AttentionSpec(kind="talking_heads", **mixing)


def test_from_dict_rejects_unknown_keys_listing_them_and_the_allowed_fields():
    data = {"kind": "mta", "kq_size": [6, 11], "heads_pre": True, "kq_pre": [6, 11]}
    with pytest.raises(SpecError, match=r"^attention: unknown field\(s\) heads_pre, kq_size; allowed fields: ") as info:
        AttentionSpec.from_dict(data)
    allowed = str(info.value).split("allowed fields: ", 1)[1]
    assert sorted(allowed.split(", ")) == sorted(FIELDS)


def test_from_dict_validates_values():
    with pytest.raises(SpecError, match=err("pad_key", "'centre'", "must be one of both, left, right")):
        AttentionSpec.from_dict({"kind": "mta", "pad_key": "centre"})


def test_spec_is_frozen():
    spec = AttentionSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kind = "mta"  # type: ignore[misc]


# ====================================================================================================
# check_model: the checks that need the model's dimensions
# ====================================================================================================


@pytest.mark.parametrize("n_heads", [1, 5, 15])
def test_check_model_diff_needs_even_heads(n_heads):
    with pytest.raises(
        SpecError, match=err("kind", "'diff'", "needs an even number of heads", f"the model has n_heads={n_heads}")
    ):
        AttentionSpec(kind="diff").check_model(n_heads=n_heads, n_layers=4)
    AttentionSpec(kind="diff").check_model(n_heads=n_heads + 1, n_layers=4)


@pytest.mark.parametrize(
    ("c_h", "n_heads", "divisors"),
    [(3, 16, "1, 2, 4, 8, 16"), (4, 10, "1, 2, 5, 10"), (32, 16, "1, 2, 4, 8, 16"), (2, 7, "1, 7")],
)
def test_check_model_group_size_must_divide_heads(c_h, n_heads, divisors):
    spec = mta(head_post="grouped", head_post_group=c_h)
    with pytest.raises(
        SpecError,
        match=err("head_post_group", str(c_h), f"c_h must divide n_heads={n_heads}; allowed: {divisors}") + "$",
    ):
        spec.check_model(n_heads=n_heads, n_layers=4)


def test_check_model_accepts_dividing_group_sizes():
    for c_h in (1, 2, 4, 8, 16):
        mta(head_post="grouped", head_post_group=c_h).check_model(n_heads=16, n_layers=4)
    mta(head_post="full").check_model(n_heads=10, n_layers=4)


@pytest.mark.parametrize(
    ("layers", "shown", "n_layers", "first_bad"),
    [([2, 6, 24], "[2, 6, 24]", 24, 24), ([30, 3], "[30, 3]", 4, 30), ([20], "[20]", 20, 20)],
)
def test_check_model_kq_layer_index_out_of_range(layers, shown, n_layers, first_bad):
    spec = mta(kq_pre=(6, 11), kq_layers=layers)
    with pytest.raises(
        SpecError,
        match=err("kq_layers", shown, f"layer index {first_bad} >= n_layers={n_layers}", f"0..{n_layers - 1}"),
    ):
        spec.check_model(n_heads=16, n_layers=n_layers)
    spec.check_model(n_heads=16, n_layers=max(layers) + 1)


@pytest.mark.parametrize(("sel", "n_layers"), [("every:4:24", 24), ("every:4:30", 24), ("every:1:4", 4)])
def test_check_model_every_offset_out_of_range(sel, n_layers):
    spec = mta(kq_pre=(6, 11), kq_layers=sel)
    with pytest.raises(
        SpecError, match=err("kq_layers", repr(sel), f"offset >= n_layers={n_layers}", "no layer would be selected")
    ):
        spec.check_model(n_heads=16, n_layers=n_layers)


def test_check_model_accepts_last_valid_offset_and_other_forms():
    mta(kq_pre=(6, 11), kq_layers="every:4:23").check_model(n_heads=16, n_layers=24)
    for sel in ("all", "every:4", "..x.", "x" * 24, [0, 23]):
        mta(kq_pre=(6, 11), kq_layers=sel).check_model(n_heads=16, n_layers=24)


# ====================================================================================================
# Valid behaviour
# ====================================================================================================


def test_default_spec_is_plain_transformer():
    spec = AttentionSpec()
    assert spec.kind == "softmax"
    assert spec.mixes_scores is False
    assert spec.has_kq_conv is False
    assert (spec.kq_pre, spec.kq_post, spec.head_pre, spec.head_post, spec.head_post_group) == (
        None,
        None,
        False,
        "none",
        None,
    )
    assert (spec.group_norm, spec.gate, spec.dropout, spec.backend) == ("none", "none", 0.0, "auto")
    assert spec.kq_layer_indices(24) == ()
    assert spec.head_group_size(16) is None
    assert spec == load_preset("transformer")


@pytest.mark.parametrize(
    ("kw", "mixes"),
    [
        ({"kq_pre": (6, 11)}, True),
        ({"kq_post": (6, 11)}, True),
        ({"head_pre": True}, True),
        ({"head_post": "full"}, True),
        ({"head_post": "grouped", "head_post_group": 2}, True),
        ({"group_norm": "rms"}, False),  # norm and gate act on A·v: plain softmax attention suffices
        ({"gate": "scalar"}, False),
        ({}, False),
    ],
)
def test_mixes_scores(kw, mixes):
    assert mta(**kw).mixes_scores is mixes


def test_yaml_lists_become_tuples_and_spec_is_hashable():
    spec = mta(kq_pre=[6, 11], kq_post=[4, 9], kq_layers=[6, 2])
    assert spec.kq_pre == (6, 11) and isinstance(spec.kq_pre, tuple)
    assert spec.kq_post == (4, 9) and isinstance(spec.kq_post, tuple)
    assert spec.kq_layers == (6, 2) and isinstance(spec.kq_layers, tuple)
    same = mta(kq_pre=(6, 11), kq_post=(4, 9), kq_layers=(6, 2))
    assert spec == same
    assert hash(spec) == hash(same)
    assert len({spec, same, AttentionSpec()}) == 2
    assert {spec: "x"}[same] == "x"


@pytest.mark.parametrize("name", preset_names())
def test_to_dict_from_dict_round_trip(name):
    spec = load_preset(name)
    data = spec.to_dict()
    assert set(data) == set(FIELDS)
    for field in ("kq_pre", "kq_post", "kq_layers"):  # YAML-friendly: no tuples
        assert not isinstance(data[field], tuple)
    assert AttentionSpec.from_dict(data) == spec
    # and through a text format, as a YAML/JSON config would
    assert AttentionSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert hash(AttentionSpec.from_dict(data)) == hash(spec)


def test_to_dict_round_trip_with_explicit_layers():
    spec = mta(kq_pre=(2, 5), pad_key="left", kq_layers=(3, 0), head_post="grouped", head_post_group=4)
    data = spec.to_dict()
    assert data["kq_pre"] == [2, 5] and data["kq_layers"] == [3, 0]
    assert AttentionSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    ("sel", "n_layers", "expected"),
    [
        ("all", 4, (0, 1, 2, 3)),
        ("all", 24, tuple(range(24))),
        ("every:4:2", 24, (2, 6, 10, 14, 18, 22)),
        ("every:4:2", 20, (2, 6, 10, 14, 18)),
        ("every:3", 10, (0, 3, 6, 9)),
        ("every:3", 9, (0, 3, 6)),
        ("every:1", 3, (0, 1, 2)),
        ("..x.", 10, (2, 6)),
        ("..x.", 24, (2, 6, 10, 14, 18, 22)),
        ("x.", 5, (0, 2, 4)),
        ([7, 1, 4], 8, (1, 4, 7)),
        ((0,), 8, (0,)),
    ],
)
def test_kq_layer_indices(sel, n_layers, expected):
    spec = mta(kq_pre=(6, 11), kq_layers=sel)
    assert spec.kq_layer_indices(n_layers) == expected
    assert [i for i in range(n_layers) if spec.uses_kq_conv(i, n_layers)] == list(expected)


@pytest.mark.parametrize("sel", ["none", "....", "."])
def test_kq_conv_on_no_layer_is_rejected(sel):
    problem = "selects no layer although a kq convolution is configured; select layers or drop kq_pre/kq_post"
    with pytest.raises(SpecError, match=err("kq_layers", repr(sel), problem)):
        mta(kq_pre=(6, 11), kq_layers=sel)
    assert mta(head_pre=True, kq_layers=sel).kq_layer_indices(8) == ()  # harmless without a kq conv


def test_layer_pattern_longer_than_the_model_is_rejected():
    problem = "the pattern is longer than n_layers=4; its tail would be ignored: give at most 4 characters"
    with pytest.raises(SpecError, match=err("kq_layers", "'..x..x'", problem)):
        mta(kq_pre=(6, 11), kq_layers="..x..x").check_model(n_heads=4, n_layers=4)


@pytest.mark.parametrize(("field", "value"), [("group_norm", "rms"), ("group_norm", "rms_depth"), ("gate", "scalar")])
def test_talking_heads_has_no_norm_and_no_gate(field, value):
    problem = "Talking heads has no group norm and no gate (spec §3); use kind='mta' to combine head mixing with them"
    with pytest.raises(SpecError, match=err(field, repr(value), problem)):
        AttentionSpec(kind="talking_heads", head_pre=True, head_post="full", **{field: value})


@pytest.mark.parametrize("field", ["dropout", "kernel_init_value"])
def test_booleans_are_not_numbers(field):
    with pytest.raises(SpecError, match=re.escape(f"attention.{field}=False:")):
        AttentionSpec(**{field: False})


def test_kq_layer_indices_with_post_conv_only():
    assert mta(kq_post=(6, 11), kq_layers="every:4:2").kq_layer_indices(12) == (2, 6, 10)


@pytest.mark.parametrize("sel", ["all", "every:4:2", "x", [0, 1]])
def test_spec_without_kq_conv_selects_no_layers(sel):
    spec = mta(head_pre=True, head_post="full", group_norm="rms", kq_layers=sel)
    assert spec.kq_layer_indices(24) == ()
    assert not any(spec.uses_kq_conv(i, 24) for i in range(24))


def test_head_group_size():
    assert mta(head_post="full").head_group_size(16) == 16
    assert mta(head_post="full").head_group_size(10) == 10
    assert mta(head_post="grouped", head_post_group=4).head_group_size(16) == 4
    assert mta(head_post="grouped", head_post_group=1).head_group_size(7) == 1
    assert mta(head_post="none").head_group_size(16) is None
    assert mta(head_pre=True).head_group_size(16) is None


# ====================================================================================================
# Presets
# ====================================================================================================


def test_preset_names_match_registry():
    names = preset_names()
    assert names == tuple(PRESETS)
    for required in ("transformer", "mta", "talking_heads", "diff", "toy_mta_n5", "toy_mta_n8", "toy_transformer"):
        assert required in names


@pytest.mark.parametrize("size", list(PAPER_SIZES))
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_fits_every_paper_size(name, size):
    _, n_layers, n_heads = PAPER_SIZES[size]
    spec = load_preset(name)
    assert isinstance(spec, AttentionSpec)
    spec.check_model(n_heads=n_heads, n_layers=n_layers)


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("toy_")])
def test_toy_presets_fit_toy_model(name):
    _, n_layers, n_heads = TOY_SIZE
    load_preset(name).check_model(n_heads=n_heads, n_layers=n_layers)


def test_load_preset_with_overrides_revalidates():
    spec = load_preset("mta", kq_post=None, gate="none")
    assert spec.kq_post is None and spec.gate == "none"
    assert spec.kq_pre == (6, 11) and spec.head_pre is True  # the rest is the preset
    assert load_preset("mta").kq_post == (6, 11)  # the registry is not mutated
    assert load_preset("mta", kq_layers=[2, 6]).kq_layers == (2, 6)  # YAML lists still become tuples

    with pytest.raises(SpecError, match=err("kq_pre", "[6, 10]", "c_k=10 is even")):
        load_preset("mta", kq_pre=(6, 10))
    with pytest.raises(SpecError, match=err("gate", "'scalar'", "not allowed for kind='softmax'")):
        load_preset("transformer", gate="scalar")
    with pytest.raises(SpecError, match=err("dropout", "1.0", "must be a number in [0, 1)")):
        load_preset("toy_mta_n5", dropout=1.0)
    with pytest.raises(SpecError, match=err("kind", "'talking_heads'", "head_pre=true")):
        load_preset("talking_heads", head_pre=False)
    with pytest.raises(SpecError, match=r"^attention: unknown field\(s\) kq_size; allowed fields: "):
        load_preset("mta", kq_size=(6, 11))


def test_unknown_preset_lists_available_ones():
    with pytest.raises(SpecError, match=r"^attention preset 'mta_big' is unknown; available: ") as info:
        load_preset("mta_big")
    available = str(info.value).split("available: ", 1)[1].split(", ")
    assert available == list(preset_names())


def test_mta_preset_is_the_papers_main_configuration():
    """Spec section 2: kq conv 6x11 pre and post on layers 2, 6, 10, ...; pre H×H mixing; post grouped
    mixing with c_h = H; group norm and scalar gate on every layer; identity init; centred key window."""
    spec = load_preset("mta")
    assert spec.kind == "mta"
    assert spec.kq_pre == (6, 11)
    assert spec.kq_post == (6, 11)
    assert spec.pad_key == "both"
    assert spec.head_pre is True
    assert spec.head_post in ("full", "grouped")
    for _, n_layers, n_heads in PAPER_SIZES.values():
        assert spec.head_group_size(n_heads) == n_heads  # c_h = H (spec section 4 table)
        assert spec.kq_layer_indices(n_layers) == PAPER_KQ_LAYERS[n_layers]
    assert spec.group_norm == "rms"
    assert spec.gate == "scalar"
    assert spec.kernel_init == "identity"
    assert spec.dropout == 0.0
    assert spec.backend == "auto"
    assert spec.mixes_scores is True


@pytest.mark.parametrize("name", [n for n in preset_names() if re.fullmatch(r"toy_mta_n\d+", n)])
def test_toy_mta_presets(name):
    """Spec section 5: pre-softmax kq conv only, c_q = 2, c_k = 2N - 1, all layers, identity init,
    no head mixing, no group norm."""
    n = int(name.rsplit("n", 1)[1])
    spec = load_preset(name)
    assert spec.kind == "mta"
    assert spec.kq_pre == (2, 2 * n - 1)
    assert spec.kq_post is None
    assert spec.pad_key == "both"
    assert spec.kernel_init == "identity"
    assert spec.kq_layer_indices(TOY_SIZE[1]) == (0, 1, 2, 3)
    assert spec.head_pre is False and spec.head_post == "none" and spec.head_group_size(2) is None
    assert spec.group_norm == "none" and spec.gate == "none"
    assert spec.dropout == pytest.approx(0.1)  # toy model attention dropout (section 5)


def test_toy_mta_presets_cover_both_block_sizes():
    assert load_preset("toy_mta_n5").kq_pre == (2, 9)
    assert load_preset("toy_mta_n8").kq_pre == (2, 15)


def test_toy_transformer_preset():
    spec = load_preset("toy_transformer")
    assert spec.kind == "softmax" and not spec.mixes_scores
    assert spec.dropout == pytest.approx(0.1)


def test_talking_heads_preset():
    """Spec section 3: pre- and post-softmax H×H mixing, identity init, all layers, no norm, no gate."""
    spec = load_preset("talking_heads")
    assert spec.kind == "talking_heads"
    assert spec.head_pre is True and spec.head_post == "full"
    assert spec.head_group_size(16) == 16
    assert not spec.has_kq_conv
    assert spec.group_norm == "none" and spec.gate == "none"


def test_diff_preset():
    spec = load_preset("diff")
    assert spec.kind == "diff"
    assert not spec.mixes_scores
    assert spec.group_norm == "none" and spec.gate == "none"  # DIFF's own norm lives in its layer


@pytest.mark.parametrize(
    ("name", "kq_pre", "kq_post", "head_pre", "head_post", "group_norm", "gate"),
    [
        ("t5_all_gate", (6, 11), (6, 11), True, True, "rms", "scalar"),
        ("t5_all_depth", (6, 11), (6, 11), True, True, "rms_depth", "none"),
        ("t5_no_kqpost_gate", (6, 11), None, True, True, "rms", "scalar"),
        ("t5_no_kqpost_nonorm", (6, 11), None, True, True, "none", "none"),
        ("t5_kqpre_headpost", (6, 11), None, False, True, "rms_depth", "none"),
        ("t5_kq_4x9", (4, 9), None, False, False, "rms_depth", "none"),
        ("t5_kq_6x11", (6, 11), None, False, False, "rms_depth", "none"),
        ("t5_kq_8x13", (8, 13), None, False, False, "rms_depth", "none"),
    ],
)
def test_table5_presets(name, kq_pre, kq_post, head_pre, head_post, group_norm, gate):
    spec = load_preset(name)
    assert spec.kind == "mta"
    assert (spec.kq_pre, spec.kq_post, spec.head_pre) == (kq_pre, kq_post, head_pre)
    assert (spec.head_group_size(16) == 16) if head_post else (spec.head_post == "none")
    assert (spec.group_norm, spec.gate) == (group_norm, gate)
    assert spec.kq_layer_indices(24) == PAPER_KQ_LAYERS[24]
