"""The registry (`backends/__init__.py`): a leaf that loads the listed backend modules lazily, records why one is
unavailable, and resolves "auto" or a pinned name on a device with one clear error when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mta_lab.attention.backends import BACKEND_NAMES, backend_names, backends, resolve, unavailable, usable
from mta_lab.attention.spec import AttentionSpec


def run_python(code: str) -> dict:
    """Run `code` in a fresh interpreter; the JSON object it prints last."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_registry_routes_only_what_each_backend_implements():
    kernel = torch.zeros(2, 2, 3)
    mix = torch.eye(2)
    assert resolve("auto", "cpu", {"kq_pre": kernel}).name == "stacked"  # flex: no CPU backward
    assert resolve("auto", "cpu", {"kq_pre": kernel, "dropout_p": 0.1}).name == "stacked"
    assert resolve("auto", "cpu", {"kq_pre": kernel, "head_pre": mix}).name == "stacked"
    assert resolve("auto", "cpu", {"head_pre": mix}).name == "eager"  # no kq conv to stack
    # CUDA: what auto picks there needs no GPU to decide.
    streaming = "triton" if "triton" in backend_names() else "flex"
    assert resolve("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.0}).name == streaming
    assert resolve("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.1}).name == "stacked"
    assert resolve("auto", "cuda", {"kq_pre": kernel, "head_pre": mix}).name == "stacked"
    paper = {"kq_pre": kernel, "head_pre": mix, "kq_post": kernel, "head_post": mix[None]}
    assert resolve("auto", "cuda", paper).name == ("triton_conv" if "triton_conv" in backend_names() else "stacked")
    mixing = "triton_mix" if "triton_mix" in backend_names() else "eager"
    assert resolve("auto", "cuda", {"head_pre": mix}).name == mixing  # nothing to convolve
    assert resolve("auto", "cuda", {"head_pre": mix, "dropout_p": 0.1}).name == "eager"
    with pytest.raises(RuntimeError, match="does not"):
        resolve("flex", "cpu", {"kq_pre": kernel})


def test_pinned_backends_fail_clearly():
    kernel = torch.zeros(2, 2, 3)
    with pytest.raises(RuntimeError, match=r"attention backend 'flex' does not run on cpu \(only on cuda\); use "
                                           r"backend=auto or one of: eager, stacked, chunked$"):
        resolve("flex", "cpu", {"kq_pre": kernel})
    with pytest.raises(RuntimeError, match=r"attention backend 'stacked' does not implement this layer's options "
                                           r"\(head_pre\): it implements calls with a pre-softmax kq conv"):
        resolve("stacked", "cpu", {"head_pre": torch.eye(2), "score_elements": 4, "compiling": False})
    with pytest.raises(RuntimeError, match=r"'flex' does not implement this layer's options \(kq_pre, dropout\)"):
        resolve("flex", "cuda", {"kq_pre": kernel, "dropout_p": 0.1})
    with pytest.raises(ValueError, match="attention backend 'nope' is unknown; the backends are: eager, stacked, "):
        resolve("nope", "cpu")
    # A pinned backend that implements the call; the hints do not count against it.
    assert resolve("chunked", "cpu", {"head_pre": torch.eye(2), "score_elements": 2**40}).name == "chunked"
    assert resolve("flex", "cuda", {"kq_pre": kernel, "score_elements": 4, "compiling": True}).name == "flex"


def test_every_listed_backend_is_installed_here_in_list_order():
    assert BACKEND_NAMES == ("eager", "stacked", "flex", "chunked", "triton", "triton_mix", "triton_flashmix",
                             "triton_conv")
    expected = [n for n in BACKEND_NAMES if n not in unavailable()]
    assert [b.name for b in backends()] == expected == list(backend_names())
    assert set(usable("cpu")) == {"eager", "stacked", "chunked"}
    assert set(usable("cuda")) == set(expected)


def test_importing_the_registry_imports_no_backend():
    loaded = run_python(
        "import json, sys; import mta_lab.attention.backends as r; "
        "print(json.dumps([m for m in sys.modules if m.startswith('mta_lab.attention.backends.')]))")
    assert [m for m in loaded if m.rsplit(".", 1)[-1] in BACKEND_NAMES] == []


WITHOUT_TRITON = r"""
import json, sys
sys.modules["triton"] = None  # `import triton` raises ImportError, as on an install without it
import torch
from mta_lab.attention.backends import resolve, unavailable, usable
from mta_lab.attention.spec import AttentionSpec
out = {"unavailable": unavailable(), "usable": list(usable("cuda")), "spec": AttentionSpec(backend="triton").backend,
       "auto kq": resolve("auto", "cuda", {"kq_pre": torch.zeros(1)}).name,
       "auto mixing": resolve("auto", "cuda", {"head_pre": torch.zeros(1)}).name}
try:
    resolve("triton", "cuda", {"kq_pre": torch.zeros(1)})
except RuntimeError as err:
    out["pinned"] = str(err)
print(json.dumps(out))
"""


def test_without_triton_its_backends_are_unavailable_with_the_reason():
    out = run_python(WITHOUT_TRITON)
    assert set(out["unavailable"]) == {"triton", "triton_mix", "triton_flashmix", "triton_conv"}
    assert all(reason.startswith("needs Triton (pip install triton) (") for reason in out["unavailable"].values())
    assert out["usable"] == ["eager", "stacked", "flex", "chunked"]
    assert out["spec"] == "triton"  # a spec's validity does not depend on the install
    assert out["auto kq"] == "flex" and out["auto mixing"] == "eager"
    assert out["pinned"].startswith("attention backend 'triton' needs Triton (pip install triton) (")
    assert out["pinned"].endswith("; install it or use backend=auto")


def test_a_spec_naming_any_listed_backend_is_valid():
    for name in BACKEND_NAMES:
        assert AttentionSpec(backend=name).backend == name


def test_any_device_backends_resolve_on_the_meta_device():
    """The accounting builds and runs models on the meta device: the any-device backends must resolve there."""
    kq = {"kq_pre": torch.zeros(1)}
    assert resolve("auto", "meta", kq).name == "stacked"
    assert resolve("eager", "meta", kq).name == "eager"
    assert resolve("auto", "meta", {"head_pre": torch.zeros(1)}).name == "eager"
