"""save_model / load_model: the MTA parameters are saved with the model (safetensors + the spec in config.json) and
reload through from_pretrained plus our attach, giving the same logits; the saved directory stays a valid Llama
checkpoint for plain transformers; a different spec or a damaged directory is one message."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import VOCAB, randomise_mta_  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from mta_lab.attention import load_preset  # noqa: E402
from mta_lab.hf import HFError, load_model, save_model  # noqa: E402

SPEC = load_preset("mta", kq_layers=[0, 2])  # the paper's layer with norm and gate, on two of three layers


def test_save_and_reload_gives_the_same_model(llama_dir, tmp_path):
    model = load_model(llama_dir, SPEC).eval()
    randomise_mta_(model)
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model(tokens).logits
    out = tmp_path / "saved"
    save_model(model, out)
    assert json.loads((out / "config.json").read_text())["mta_attention"] == SPEC.to_dict()
    stored = load_file(str(out / "model.safetensors"))
    assert "model.layers.0.self_attn.mta.kq_pre" in stored and "model.layers.1.self_attn.mta.kq_pre" not in stored

    reloaded = load_model(out).eval()  # the spec comes from config.json
    assert reloaded.config.mta_attention == SPEC.to_dict()
    for (name, p), (name2, p2) in zip(model.named_parameters(), reloaded.named_parameters(), strict=True):
        assert name == name2 and torch.equal(p, p2), name
    with torch.no_grad():
        assert torch.equal(reloaded(tokens).logits, before)
    # Plain transformers still reads the Llama weights (it ignores the MTA tensors).
    plain = LlamaForCausalLM.from_pretrained(out, use_kernels=False)
    assert torch.equal(plain.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_a_different_spec_or_damaged_tensors_fail_clearly(llama_dir, tmp_path):
    out = tmp_path / "saved"
    save_model(load_model(llama_dir, SPEC), out)
    with pytest.raises(HFError, match="saved with attention"):
        load_model(out, load_preset("talking_heads"))
    weights = out / "model.safetensors"
    tensors = {k: v for k, v in load_file(str(weights)).items() if k != "model.layers.2.self_attn.mta.kq_post"}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(HFError, match=r"missing: \['model.layers.2.self_attn.mta.kq_post'\]"):
        load_model(out)
