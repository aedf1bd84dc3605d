"""The policy of backend="auto" (`backends/policy.py`): it picks exactly what the registry's priorities and accepts
predicates picked before it replaced them, for every kind of call, on CPU and CUDA, with Triton installed or not.

auto_choices.tsv beside this file was recorded from the old `resolve_backend` (every combination of device, Triton
present or absent, the four weights, dropout, score-map size hint and compiling hint). The CUDA rows run here without
a GPU: the policy is a pure function of the call and of the names usable on the device.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mta_lab.attention.backends import backends, get, usable
from mta_lab.attention.backends.policy import (
    MATERIALISE_UP_TO,
    OP_OPTIONS,
    RULES,
    STREAM_MIXING_ABOVE,
    Call,
    choose,
    preference,
)

TABLE = Path(__file__).with_name("auto_choices.tsv")


def recorded_rows() -> list[dict]:
    lines = [line for line in TABLE.read_text().splitlines() if not line.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def options_of(row: dict) -> dict:
    options = {name: (torch.zeros(1) if row[name] == "yes" else None) for name in OP_OPTIONS}
    options["dropout_p"] = 0.1 if row["dropout"] == "yes" else 0.0
    if row["score"] != "absent":
        options["score_elements"] = MATERIALISE_UP_TO + (row["score"] == "large")
    if row["compiling"] != "unset":
        options["compiling"] = row["compiling"] == "yes"
    return options


def usable_names(device: str, triton: bool) -> list[str]:
    """The backends usable on `device` here, less the Triton ones when simulating an install without Triton."""
    return [n for n in usable(device) if triton or not n.startswith("triton")]


def test_the_recorded_table_covers_every_combination():
    rows = recorded_rows()
    assert len(rows) == 2 * 2 * 2**4 * 2 * 3 * 3
    assert len({tuple(r[c] for c in r if c != "backend") for r in rows}) == len(rows)


@pytest.mark.parametrize(("device", "triton"), list(itertools.product(("cpu", "cuda"), (True, False))))
def test_auto_picks_what_it_picked_before(device, triton):
    rows = [r for r in recorded_rows() if r["device"] == device and (r["triton"] == "installed") == triton]
    names = usable_names(device, triton)
    wrong = [(r, got) for r in rows if (got := choose(options_of(r), names)) != r["backend"]]
    assert not wrong, wrong[:5]


# The same, for the calls of the paper's layer types, written out (device cuda, Triton installed unless said).
LAYER_TYPES = [
    # (options, device, triton, expected)
    (dict(kq_pre=1), "cpu", True, "stacked"),
    (dict(kq_pre=1), "cuda", True, "triton"),
    (dict(kq_pre=1), "cuda", False, "flex"),
    (dict(kq_pre=1, score_elements=MATERIALISE_UP_TO), "cuda", False, "stacked"),  # small: materialise
    (dict(kq_pre=1, score_elements=MATERIALISE_UP_TO, compiling=True), "cuda", True, "stacked"),
    (dict(kq_pre=1, score_elements=MATERIALISE_UP_TO + 1, compiling=True), "cuda", True, "triton"),
    (dict(kq_pre=1, dropout_p=0.1), "cuda", True, "stacked"),
    (dict(head_pre=1, head_post=1), "cpu", True, "eager"),  # Talking heads
    (dict(head_pre=1, head_post=1), "cuda", True, "triton_mix"),
    (dict(head_pre=1, head_post=1), "cuda", False, "eager"),
    (dict(head_pre=1, head_post=1, score_elements=STREAM_MIXING_ABOVE), "cuda", True, "triton_mix"),
    (dict(head_pre=1, head_post=1, score_elements=STREAM_MIXING_ABOVE + 1), "cuda", True, "triton_flashmix"),
    (dict(head_post=1, score_elements=2**40, compiling=True), "cuda", True, "triton_flashmix"),  # linear memory
    (dict(head_pre=1, score_elements=2**40, dropout_p=0.1), "cuda", True, "eager"),
    (dict(head_pre=1, head_post=1, score_elements=2**40), "cuda", False, "eager"),
    (dict(head_pre=1, dropout_p=0.1), "cuda", True, "eager"),
    (dict(kq_pre=1, kq_post=1, head_pre=1, head_post=1), "cuda", True, "triton_conv"),  # the paper's kq layer
    (dict(kq_pre=1, kq_post=1, head_pre=1, head_post=1), "cuda", False, "stacked"),
    (dict(kq_pre=1, kq_post=1, head_pre=1, head_post=1), "cpu", True, "stacked"),
    (dict(kq_pre=1, head_post=1), "cuda", True, "stacked"),
    (dict(kq_post=1), "cuda", True, "triton_conv"),
    (dict(kq_post=1), "cpu", True, "eager"),
]


@pytest.mark.parametrize(("options", "device", "triton", "expected"), LAYER_TYPES)
def test_auto_for_each_layer_type(options, device, triton, expected):
    options = {k: (torch.zeros(1) if k in OP_OPTIONS else v) for k, v in options.items()}
    assert choose(options, usable_names(device, triton)) == expected


def test_a_rule_only_picks_calls_its_backend_implements():
    # Every combination of the call's features: where a rule holds, its backend computes the call (pinned, the same
    # call would be accepted by resolve).
    for flags in itertools.product((False, True), repeat=5):
        for score, compiling in itertools.product((None, MATERIALISE_UP_TO, MATERIALISE_UP_TO + 1), (False, True)):
            call = Call(*flags, score_elements=score, compiling=compiling)
            options = {k: (torch.zeros(1) if getattr(call, k) else None) for k in OP_OPTIONS}
            options["dropout_p"] = 0.1 if call.dropout else 0.0
            for rule in RULES:
                if rule.holds(call):
                    assert get(rule.backend).implements(options), (rule.backend, call)


def test_auto_materialises_small_score_maps_and_streams_large_ones():
    flex = next(rule for rule in RULES if rule.backend == "flex")
    kernel = torch.zeros(2, 2, 3)
    assert not flex.holds(Call.of({"kq_pre": kernel, "score_elements": MATERIALISE_UP_TO}))  # "stacked" is faster
    assert flex.holds(Call.of({"kq_pre": kernel, "score_elements": MATERIALISE_UP_TO + 1}))
    assert flex.holds(Call.of({"kq_pre": kernel}))  # no size given: the linear-memory path
    assert not flex.holds(Call.of({"kq_pre": kernel, "dropout_p": 0.1, "score_elements": 2**40}))


def test_every_backend_but_chunked_has_a_rule_and_eager_ends_the_table():
    assert RULES[-1].backend == "eager" and RULES[-1].holds(Call())
    assert {rule.backend for rule in RULES} == {b.name for b in backends()} - {"chunked"}
    assert preference("chunked") == len(RULES)
    with pytest.raises(RuntimeError, match="no attention backend is usable"):
        choose({"kq_pre": torch.zeros(1)}, [])
