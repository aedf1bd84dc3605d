"""`mta-lab attention backends`: what backend=auto runs for each layer type, and why not the others, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

from mta_lab.cli import main


def report(capsys, *args: str) -> dict:
    assert main(["attention", "backends", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def by_layer(out: dict) -> dict:
    return {layer["layer"]: layer for layer in out["layers"]}


def test_on_cpu(capsys):
    out = report(capsys, "--device", "cpu")
    assert out["device"] == "cpu"
    layers = by_layer(out)
    kq = layers["kq conv only (kq_pre)"]
    assert kq["auto"] == {"large map": "stacked", "small map": "stacked", "small map, compiled": "stacked"}
    assert kq["not_chosen"]["flex"] == "does not run on cpu"
    assert kq["not_chosen"]["eager"] == "the policy prefers stacked"
    assert kq["not_chosen"]["chunked"].startswith("never chosen by auto")
    heads = layers["head mixing only (Talking heads; the paper's layers without kq convs)"]
    assert heads["auto"]["large map"] == "eager"
    assert heads["not_chosen"]["stacked"] == "does not implement the call"
    assert layers["paper kq layer (kq_pre + kq_post + head mixing)"]["auto"]["large map"] == "stacked"


def test_for_cuda_without_a_gpu(capsys):
    layers = by_layer(report(capsys, "--device", "cuda"))
    kq = layers["kq conv only (kq_pre)"]
    assert kq["auto"] == {"large map": "triton", "small map": "triton", "small map, compiled": "stacked"}
    assert kq["not_chosen"]["flex"] == "the policy prefers triton"
    assert layers["kq conv only, with dropout"]["auto"]["large map"] == "stacked"
    assert layers["kq conv only, with dropout"]["not_chosen"]["triton"] == "does not implement the call"
    assert layers["head mixing only (Talking heads; the paper's layers without kq convs)"]["auto"]["large map"] == (
        "triton_mix")
    assert layers["head mixing with dropout"]["auto"]["large map"] == "eager"
    assert layers["paper kq layer (kq_pre + kq_post + head mixing)"]["auto"]["large map"] == "triton_conv"
    assert layers["kq_pre + head_post"]["auto"]["large map"] == "stacked"


def test_the_tables(capsys):
    assert main(["attention", "backends"]) == 0
    out = capsys.readouterr().out
    assert "what backend=auto runs on cpu" in out
    assert "kq conv only (kq_pre) -> stacked" in out
    assert "flex: does not run on cpu" in out


def test_without_triton_the_reason_is_shown():
    code = ("import sys; sys.modules['triton'] = None; from mta_lab.cli import main; "
            "sys.exit(main(['attention', 'backends', '--json', '--device', 'cuda']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert set(out["unavailable"]) == {"triton", "triton_mix", "triton_flashmix", "triton_conv"}
    kq = by_layer(out)["kq conv only (kq_pre)"]
    assert kq["auto"]["large map"] == "flex"
    assert kq["not_chosen"]["triton"].startswith("unavailable: needs Triton (pip install triton)")
