"""`mta-lab generate` and `mta-lab eval` on a trained model=hf run: a tiny local Llama with the paper's MTA (a kq
convolution over c_q > 1 query rows on every layer) trained a few steps through the real entry (Lightning, MLflow
sqlite), then loaded from its run directory, final/model.pt, final/hf and its Lightning checkpoint (the same
weights), generated from and evaluated with NIAH through the real CLI; our `generate` with the KV cache equals full
recomputation; without transformers, loading such a run is one message naming the extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from hf_models import VOCAB, randomise_mta_, save_byte_llama  # noqa: E402
from integration_helpers import REPO, assert_one_line_error, clean_env, client_for, tiny  # noqa: E402

from mta_lab.attention import AttentionSpec, load_preset  # noqa: E402
from mta_lab.conf import load_run_config  # noqa: E402
from mta_lab.errors import UserError  # noqa: E402
from mta_lab.eval.checkpoint import load_model  # noqa: E402
from mta_lab.hf.lm import HFLanguageModel  # noqa: E402
from mta_lab.model.generate import generate  # noqa: E402
from mta_lab.train.entry import train  # noqa: E402

STEPS = 6


def mta_lab(*args: str, prelude: str = "pass") -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; `prelude` runs first (e.g. hiding transformers)."""
    code = f"import sys; {prelude}; from mta_lab.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                          env=clean_env(), timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache):
    """(run result, run dir) of 6 steps of model=hf attention=mta kq_layers=all on a tiny byte-level Llama."""
    root = tmp_path_factory.mktemp("hfrun")
    llama = save_byte_llama(root / "llama512")
    config = load_run_config([*tiny(root / "runs", "hf-mta", data_cache, max_steps=STEPS, seq_len=32,
                                    ckpt_every=STEPS),
                              "model=hf", f"model.path={llama}", "attention=mta", "attention.kq_layers=all",
                              "optim.lr=3e-3", "optim.warmup_steps=0"])
    result = train(config, progress=False)
    return result, Path(result.run_dir)


def test_every_form_of_the_run_loads_the_same_trained_model(trained):
    _, run_dir = trained
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts, list(run_dir.iterdir())
    forms = [run_dir, run_dir / "final" / "model.pt", run_dir / "final" / "hf", ckpts[-1]]
    loaded = [load_model(form) for form in forms]
    reference, _ = loaded[0]
    assert isinstance(reference, HFLanguageModel) and not reference.training
    assert reference.decodes_by_recomputation  # the paper's kq conv reads 6 query rows
    assert reference.config.source == "hf" and reference.config.max_seq_len == 256
    ref_params = dict(reference.named_parameters())
    assert any(".mta." in name for name in ref_params)
    for form, (model, payload) in zip(forms, loaded, strict=True):
        assert payload["step"] == STEPS, form
        assert payload["data"]["tokenizer"] == "byte", form
        assert payload["attention"]["kq_layers"] == "all", form
        for name, p in model.named_parameters():
            assert torch.equal(p, ref_params[name]), (form, name)
    # The weights are the trained ones, not the checkpoint's it started from.
    original = HFLanguageModel.load(str(reference.config.path), AttentionSpec.from_dict(loaded[0][1]["attention"]))
    assert any(not torch.equal(p, ref_params[n]) for n, p in original.named_parameters() if ".mta." in n)


def test_generate_cli_on_the_run_dir_final_hf_and_the_checkpoint(trained):
    _, run_dir = trained
    common = ["prompt=To be, or not", "max_new_tokens=8", "temperature=0", "stop_at_eos=false"]
    outs = {}
    for name, ckpt, cache in (("run", run_dir, "true"), ("hf", run_dir / "final" / "hf", "false")):
        result = mta_lab("generate", f"ckpt={ckpt}", *common, f"cache={cache}", "--json")
        assert result.returncode == 0, result.stderr
        outs[name] = json.loads(result.stdout)
    assert outs["run"]["new_ids"] == outs["hf"]["new_ids"] and len(outs["run"]["new_ids"]) == 8
    assert outs["run"]["prompt_ids"] == list(b"To be, or not") and outs["run"]["tokenizer"] == "byte"
    assert outs["run"]["recomputed"] is True and outs["run"]["step"] == STEPS == outs["hf"]["step"]
    assert isinstance(outs["run"]["text"], str)
    ckpt = sorted((run_dir / "checkpoints").glob("*.ckpt"))[-1]
    plain = mta_lab("generate", f"ckpt={ckpt}", *common)
    assert plain.returncode == 0, plain.stderr
    out = " ".join(plain.stdout.split())
    assert out.startswith("To be, or not") and "8 tokens in" in out
    assert "full recomputation (model=hf with a kq convolution over c_q > 1 query rows" in out


def test_eval_niah_cli_logs_into_the_hf_runs_mlflow_run(trained, data_cache):
    result, run_dir = trained
    niah = mta_lab("eval", "niah", f"ckpt={run_dir}", "contexts=160", "needles=1", "depths=0,1", "samples=1",
                   "batch_size=2", f"cache_dir={data_cache}", "--json")
    assert niah.returncode == 0, niah.stderr
    out = json.loads(niah.stdout)
    assert 0.0 <= out["summary"]["acc"] <= 1.0 and out["mlflow_run_id"] == result.run_id
    assert [(row["context"], row["depth"]) for row in out["settings"]] == [(160, 0.0), (160, 1.0)]
    metrics = client_for(result.tracking_uri).get_run(result.run_id).data.metrics
    assert metrics["eval/niah/acc"] == pytest.approx(out["summary"]["acc"])


@pytest.mark.parametrize("spec,recomputes", [
    (load_preset("talking_heads"), False),
    (AttentionSpec(kind="mta", kq_pre=(1, 3), kq_post=(1, 2), pad_key="left", head_pre=True, group_norm="rms",
                   gate="scalar"), False),
    (load_preset("mta", kq_layers="all"), True),
], ids=["talking_heads", "kq_one_query_row", "paper_mta"])
def test_our_generate_with_the_cache_equals_recomputation(llama_dir, spec, recomputes):
    model = HFLanguageModel.load(str(llama_dir), spec).eval()
    randomise_mta_(model.hf)
    assert model.decodes_by_recomputation is recomputes
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(5))
    cached = generate(model, prompt, 7, temperature=0.0, use_cache=True)
    full = generate(model, prompt, 7, temperature=0.0, use_cache=False)
    assert torch.equal(cached.tokens, full.tokens) and cached.tokens.shape == (2, 12)
    assert cached.cache_bytes > 0
    with torch.no_grad():  # the cached logits themselves, not only their argmax
        cache = model.new_cache()
        model(cached.tokens[:, :-3], cache)
        step = model(cached.tokens[:, -3:], cache)
        assert torch.allclose(step, model(cached.tokens)[:, -3:], rtol=0, atol=1e-5)


def test_without_transformers_an_hf_run_is_one_message(trained, monkeypatch):
    _, run_dir = trained
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "transformers", None)  # as if the extra were not installed
        for ckpt in (run_dir, run_dir / "final" / "hf"):
            with pytest.raises(UserError, match=r"needs transformers, which is not installed: pip install "
                                                r"'mta-lab\[hf\]'"):
                load_model(ckpt)
    result = mta_lab("generate", f"ckpt={run_dir}", "prompt=To be", prelude="sys.modules['transformers'] = None")
    assert_one_line_error(result, f"ckpt={run_dir / 'final' / 'model.pt'} (a model=hf run) needs transformers",
                          "pip install 'mta-lab[hf]'")
