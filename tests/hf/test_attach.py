"""mta_lab.hf.attach on a tiny local Llama: with MTA at identity (group norm and gate off) the logits equal the
unmodified HF model's (SDPA, float64); the MTA op really runs (moving its parameters changes the logits); the
kq kernels sit on the layers `kq_layers` selects; the mask function is registered; bad inputs are one message."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import VOCAB, randomise_mta_, tiny_llama  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS  # noqa: E402

from mta_lab.attention import AttentionSpec, load_preset  # noqa: E402
from mta_lab.hf import HFError, attach, load_model  # noqa: E402

IDENTITY_SPECS = {
    "mta": load_preset("mta", group_norm="none", gate="none", kq_layers="all"),
    "mta_paper_layers": load_preset("mta", group_norm="none", gate="none"),  # kq on layer 2 of 3
    "talking_heads": load_preset("talking_heads"),
    "kq_left_grouped": AttentionSpec(kind="mta", kq_pre=(3, 4), kq_post=(2, 2), pad_key="left", head_post="grouped",
                                     head_post_group=2),
    "softmax": AttentionSpec(),
}


def _plain(path, dtype):
    return LlamaForCausalLM.from_pretrained(path, dtype=dtype, use_kernels=False, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("name", list(IDENTITY_SPECS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_identity_mta_equals_the_unmodified_model(llama_dir, name, dtype, tol):
    tokens = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _plain(llama_dir, dtype)(tokens).logits
        model = load_model(llama_dir, IDENTITY_SPECS[name], dtype=dtype).eval()
        got = model(tokens).logits
    assert model.config._attn_implementation == "mta"
    rel = ((got - expected).norm() / expected.norm()).item()
    assert rel < tol, rel
    if IDENTITY_SPECS[name].mixes_scores:  # the op ran, through a backend of mta_lab.attention
        assert all(getattr(layer.self_attn, "resolved_backend", None) for layer in model.model.layers)
        randomise_mta_(model)
        with torch.no_grad():
            moved = model(tokens).logits
        assert ((moved - expected).norm() / expected.norm()).item() > 1e-3


def test_paper_norm_and_gate_change_the_step0_function(llama_dir):
    """With the paper's group norm and gate (issue 18: offered explicitly) the retrofit is not the parent."""
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _plain(llama_dir, torch.float64)(tokens).logits
        got = load_model(llama_dir, load_preset("mta"), dtype=torch.float64).eval()(tokens).logits
    assert ((got - expected).norm() / expected.norm()).item() > 1e-3


def test_parameters_follow_kq_layers_and_grouped_query_heads(llama_dir):
    model = load_model(llama_dir, load_preset("mta", kq_layers=[0, 2]))
    layers = [layer.self_attn.mta for layer in model.model.layers]
    assert [m.kq_pre is not None for m in layers] == [True, False, True]
    assert [m.kq_post is not None for m in layers] == [True, False, True]
    # 4 query heads (2 key/value heads repeated): kernels and mixing are per query head.
    assert tuple(layers[0].kq_pre.shape) == (4, 6, 11) and tuple(layers[1].head_pre.shape) == (4, 4)
    assert all(m.gate is not None and m.norm_weight is not None for m in layers)
    assert "mta" in ALL_MASK_ATTENTION_FUNCTIONS
    assert model.config.mta_attention["kq_layers"] == [0, 2]


def test_a_padding_mask_is_refused(llama_dir):
    model = load_model(llama_dir, IDENTITY_SPECS["mta"]).eval()
    tokens = torch.randint(0, VOCAB, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :3] = 0
    with pytest.raises(HFError, match="padding"):
        model(tokens, attention_mask=mask)
    model(tokens, attention_mask=torch.ones_like(mask))  # all ones: the causal mask only


def test_bad_inputs_are_one_message(tmp_path, llama_dir):
    with pytest.raises(HFError, match="no config.json"):
        load_model(tmp_path / "nowhere")
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(HFError, match="Llama architecture only"):
        load_model(tmp_path / "gpt2")
    with pytest.raises(HFError, match="DIFF"):
        load_model(llama_dir, load_preset("diff"))
    model = tiny_llama()
    attach(model, AttentionSpec())
    with pytest.raises(HFError, match="already has MTA"):
        attach(model, AttentionSpec())
