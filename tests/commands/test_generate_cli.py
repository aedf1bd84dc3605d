"""`mta-lab generate` in a subprocess on tiny models saved the way training exports `final/model.pt`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from integration_helpers import REPO, assert_one_line_error, clean_env

from mta_lab.attention.presets import load_preset
from mta_lab.data import DataConfig
from mta_lab.model import build_model, load_model_preset


def _export(run_dir: Path, preset: str, data: DataConfig, vocab_size: int, n_layers: int = 3) -> Path:
    """A run directory with final/model.pt as `LanguageModelTask.export_final` writes it (entry.py adds data)."""
    torch.manual_seed(0)
    config = load_model_preset("tiny", n_layers=n_layers, vocab_size=vocab_size, max_seq_len=128)
    spec = load_preset(preset)
    model = build_model(config, spec)
    path = run_dir / "final" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": config.to_dict(), "attention": spec.to_dict(), "state_dict": model.state_dict(),
                "step": 7, "data": data.to_dict()}, path)
    return run_dir


def generate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta_lab.cli", "generate", *args], capture_output=True, text=True,
                          cwd=REPO, env=clean_env(), timeout=120)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("gen") / "toy", "toy_mta_n5", DataConfig(kind="toy", tokenizer="char"), 31)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("gen") / "text", "mta", DataConfig(), 259)


def test_toy_model_generates_letters_with_throughput(toy_run):
    result = generate_cli(f"ckpt={toy_run}", "prompt=abcde.fghij#ab", "max_new_tokens=12", "seed=3",
                          "stop_at_eos=false")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert out.startswith("abcde.fghij#ab")
    assert "12 tokens in" in out and "tokens/s" in out and "cached decoding on cpu" in out


def test_json_output_cached_equals_full_recomputation(text_run):
    runs = {}
    for cache in ("true", "false"):
        result = generate_cli(f"ckpt={text_run}/final/model.pt", "prompt=To be, or not", "max_new_tokens=24",
                              "temperature=0.9", "top_k=20", "seed=5", "stop_at_eos=false", f"cache={cache}", "--json")
        assert result.returncode == 0, result.stderr
        runs[cache] = json.loads(result.stdout)
    cached, full = runs["true"], runs["false"]
    assert cached["new_ids"] == full["new_ids"] and len(cached["new_ids"]) == 24
    assert cached["prompt_ids"] == list(b"To be, or not") and cached["tokenizer"] == "byte"
    assert cached["step"] == 7 and cached["tokens_per_s"] > 0 and cached["cache_bytes"] > 0
    assert cached["text"] == bytes(i for i in cached["new_ids"] if i < 256).decode("utf-8", errors="replace")


def test_prompt_ids_when_the_tokenizer_cannot_be_rebuilt(tmp_path):
    missing = tmp_path / "gone" / "tokenizer.json"
    data = DataConfig(tokenizer=str(missing))
    run = _export(tmp_path / "run", "transformer", data, 50, n_layers=2)
    assert_one_line_error(generate_cli(f"ckpt={run}", "prompt=hello"), "cannot be rebuilt", "prompt_ids=1,2,3")
    result = generate_cli(f"ckpt={run}", "prompt_ids=1,2,3", "max_new_tokens=4", "temperature=0")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "prompt ids: 1,2,3" in out and "generated ids:" in out and "tokens/s" in out


@pytest.mark.parametrize(("args", "fragments"), [
    (["ckpt=/nonexistent/model.pt"], ["ckpt=/nonexistent/model.pt", "not a file"]),
    ([], ["ckpt= is required"]),
    (["temperature=-1"], ["temperature=-1", "must be a number >= 0"]),
    (["top_k=-2"], ["top_k=-2"]),
    (["max_new_tokens=0"], ["max_new_tokens=0", "positive integer"]),
    (["max_new_tokens=500"], ["max_new_tokens=500", "max_seq_len=128"]),
    (["prompt_ids=1,x"], ["prompt_ids='1,x'", "comma-separated"]),
    (["prompt_ids=99"], ["[99]", "vocabulary 0..30"]),
    (["prompt=ABC"], ["'A' is not in its alphabet"]),
    (["prompt=ab", "prompt_ids=1"], ["either prompt= or prompt_ids="]),
    (["device=tpu"], ["device='tpu'", "allowed"]),
    (["colour=red"], ["'colour=red'", "KEY one of"]),
])
def test_bad_input_is_one_clear_error(toy_run, args, fragments):
    ckpt = [] if any(a.startswith("ckpt=") for a in args) or not args else [f"ckpt={toy_run}"]
    assert_one_line_error(generate_cli(*ckpt, *args), *fragments)


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a checkpoint")
    assert_one_line_error(generate_cli(f"ckpt={bogus}"), f"ckpt={bogus}", "cannot be read as a checkpoint")
