"""The analytic accounting (mta_lab/model/accounting.py): parameter counts (spec §4, paper Table 8) and FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mta_lab.attention.presets import load_preset, preset_names
from mta_lab.cli import main
from mta_lab.model import build_model, load_model_preset
from mta_lab.model.accounting import count_parameters, flops_per_token

# Every count spec §4 lists (paper Table 8, from the release's configs).
TABLE8 = {
    ("880m", "transformer"): 876_553_728,
    ("880m", "mta"): 876_583_320,
    ("880m", "talking_heads"): 876_566_016,
    ("880m", "diff"): 876_567_552,
    ("300m", "transformer"): 388_277_248,
    ("300m", "mta"): 388_300_628,
    ("550m", "transformer"): 651_818_240,
    ("550m", "mta"): 651_837_128,
    ("1b", "transformer"): 1_495_894_016,
    ("1b", "mta"): 1_495_925_144,
}


@pytest.mark.parametrize(("size", "variant"), list(TABLE8))
def test_parameter_counts_reproduce_table8_exactly(size, variant):
    config, spec = load_model_preset(size), load_preset(variant)
    with torch.device("meta"):
        model = build_model(config, spec)
    numel = sum(p.numel() for p in model.parameters())
    assert numel == TABLE8[size, variant]
    assert count_parameters(config, spec).total == numel


@pytest.mark.parametrize("variant", preset_names())
def test_analytic_flops_equal_a_flop_counter_on_the_meta_device(variant):
    seq_len = 64
    config = load_model_preset("tiny", n_layers=8, max_seq_len=seq_len)
    # The accounting counts the reference op's work (model FLOPs: the same for every backend of the op, as MFU
    # and the scaling fits need); a fused backend may do more or fewer operations.
    spec = load_preset(variant, backend="eager")
    with torch.device("meta"):
        model = build_model(config, spec)
        tokens = torch.zeros(2, seq_len, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    analytic = flops_per_token(config, spec, seq_len)
    assert counter.get_total_flops() == analytic.forward * 2 * seq_len
    assert analytic.train == 3 * analytic.forward
    assert (analytic.attention_extras > 0) == spec.mixes_scores


def test_count_command_prints_total_equal_to_numel(capsys):
    assert main(["count", "model=880m", "attention=mta"]) == 0
    out = capsys.readouterr().out
    assert "total: 876583320" in out.splitlines()[-1]


def test_count_command_rejects_unknown_options():
    assert main(["count", "model=880m", "colour=red"]) == 2
    assert main(["count", "model=9b"]) == 2
