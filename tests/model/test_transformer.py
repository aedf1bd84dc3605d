"""Model presets, the decoder, and the analytic accounting (spec §4, paper Table 8)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mta_lab.attention.presets import load_preset, preset_names
from mta_lab.cli import main
from mta_lab.model import build_model, load_model_preset
from mta_lab.model.accounting import count_parameters, flops_per_token
from mta_lab.model.config import ModelConfigError, swiglu_hidden

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


@pytest.mark.parametrize(("dim", "hidden"), [(1024, 2816), (1280, 3584), (1536, 4096), (2048, 5632)])
def test_swiglu_hidden_matches_spec(dim, hidden):
    assert swiglu_hidden(dim) == hidden


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


def test_forward_shape_tied_embeddings_and_causality():
    torch.manual_seed(0)
    config = load_model_preset("tiny")
    model = build_model(config, load_preset("mta", kq_layers="all")).double()
    tokens = torch.randint(0, config.vocab_size, (2, 20))
    logits = model(tokens)
    assert logits.shape == (2, 20, config.vocab_size)
    assert "tok_embeddings.weight" in dict(model.named_parameters())
    assert not any("output" in name or "lm_head" in name for name, _ in model.named_parameters())
    changed = tokens.clone()
    changed[:, 12] = (changed[:, 12] + 1) % config.vocab_size
    other = model(changed)
    torch.testing.assert_close(other[:, :12], logits[:, :12], rtol=0, atol=1e-12)
    assert (other[:, 12:] - logits[:, 12:]).abs().max() > 1e-6


def test_same_seed_same_model_and_output():
    def run():
        torch.manual_seed(7)
        model = build_model(load_model_preset("tiny"), load_preset("talking_heads"))
        return model(torch.arange(16).view(1, 16))

    torch.testing.assert_close(run(), run(), rtol=0, atol=0)


def test_init_keeps_the_attention_variant_initialisation():
    model = build_model(load_model_preset("tiny"), load_preset("mta", kq_layers="all"))
    for block in model.layers:
        assert torch.equal(block.attn.head_pre, torch.eye(4))
        assert block.attn.kq_pre[:, 5, 5].eq(1).all() and block.attn.kq_pre.sum() == 4
        assert block.attn.gate.bias.eq(0).all()


def test_sequence_longer_than_max_seq_len_is_a_clear_error():
    model = build_model(load_model_preset("tiny", max_seq_len=8), load_preset("transformer"))
    with pytest.raises(ValueError, match="exceeds model.max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_heads": 5}, "model.n_heads=5: must divide model.dim=64"),
        ({"dim": 0}, "model.dim=0: must be a positive integer"),
        ({"dim": 96, "n_heads": 32}, "head_dim=3 must be even"),
        ({"colour": 1}, "unknown field"),
    ],
)
def test_model_config_errors(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        load_model_preset("tiny", **overrides)


def test_count_command_prints_total_equal_to_numel(capsys):
    assert main(["count", "model=880m", "attention=mta"]) == 0
    out = capsys.readouterr().out
    assert "total: 876583320" in out.splitlines()[-1]


def test_count_command_rejects_unknown_options():
    assert main(["count", "model=880m", "colour=red"]) == 2
    assert main(["count", "model=9b"]) == 2
