"""The flash-style head-mixing kernels (`attention/backends/triton_flashmix.py`, backend "triton_flashmix") against
the eager op, in Triton's interpreter on a CPU (fp32, forward and every gradient: q, k, v, W₁ and W₂; one query chunk
and many), and compiled on a GPU (the `gpu` tests below). Without Triton this skips."""

from __future__ import annotations

import pytest
import torch
from attention_cases import (
    assert_mixing_backend_on_gpu_matches_eager,
    assert_same_loss_and_grads,
    model_and_eager_twin,
    needs_cuda,
)
from triton_interpreter import SKIP, run_interpreted

from mta_lab.attention.backends import backend_names, resolve

CHECK = r"""
import json, os, sys, torch
os.environ["MTA_TRITON_FLASHMIX_BLOCKS"] = json.dumps(BLOCKS)
from mta_lab.attention.reference import multi_token_attention
from mta_lab.attention.backends.triton_flashmix import flash_mix_attention

def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()

mutant = False
torch.manual_seed(SEED)
worst = {}
for (b, h, t, d, dv), (pre, post, c_h) in CASES:
    q, k = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(2))
    v = torch.randn(b, h, t, dv, requires_grad=True)
    weights = {}
    if pre:
        weights["head_pre"] = torch.randn(h, h, requires_grad=True)
    if post:
        weights["head_post"] = torch.randn(h // c_h, c_h, c_h, requires_grad=True)
    ref = multi_token_attention(q, k, v, **weights)
    pre_w = weights.get("head_pre")
    if mutant and pre_w is not None:  # [out, in] read as [in, out] must be caught
        pre_w = pre_w.t()
    got = flash_mix_attention(q, k, v, pre_w, weights.get("head_post"))
    grad = torch.randn_like(ref)
    leaves = (q, k, v, *weights.values())
    expected, grads = torch.autograd.grad(ref, leaves, grad), torch.autograd.grad(got, leaves, grad)
    worst["out"] = max(worst.get("out", 0.0), rel(got, ref))
    for name, a, e in zip(("dq", "dk", "dv", *weights), grads, expected):
        worst[name] = max(worst.get(name, 0.0), rel(a, e))
print(json.dumps(worst))
"""

# (B, H, T, d, dv) and (pre, post, c_h): T below one 16-row tile and odd, across several tiles and key ranges, H below
# the 16-head tile and odd, B > 1, v wider than q, grouped and full post mixing, each mixing alone.
CASES = [((1, 4, 37, 8, 8), (True, True, 4)), ((2, 3, 20, 4, 4), (True, False, 1)),
         ((1, 4, 5, 8, 16), (False, True, 2)), ((3, 5, 70, 16, 8), (True, True, 5))]
ONE_CHUNK = {"BM": 16, "BN": 16, "KB": 2}
# One 16-row tile per chunk (every chunk boundary), and q kᵀ, dO vᵀ in 16-wide chunks.
TINY_CHUNKS = {"BM": 16, "BN": 16, "KB": 1, "CHUNK_MB": 1e-6, "D_CHUNK": 16}


def check(cases, blocks, seed=0, mutant=False) -> dict:
    code = CHECK.replace("BLOCKS", repr(blocks)).replace("SEED", str(seed)).replace("CASES", repr(cases))
    return run_interpreted(code.replace("mutant = False", f"mutant = {mutant}"))


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
@pytest.mark.parametrize(("blocks", "seed"), [(ONE_CHUNK, 0), (TINY_CHUNKS, 1)])
def test_flash_mixing_kernels_match_the_reference_in_the_interpreter(blocks, seed):
    cases = CASES if blocks is ONE_CHUNK else [((2, 3, 77, 4, 4), (True, True, 1)),
                                               ((1, 2, 50, 40, 24), (True, True, 2))]
    worst = check(cases, blocks, seed)
    assert set(worst) == {"out", "dq", "dk", "dv", "head_pre", "head_post"}
    for name, err in worst.items():
        assert err < 1e-5, (name, err)


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_a_transposed_mixing_matrix_is_caught():
    assert check(CASES[:1], ONE_CHUNK, mutant=True)["out"] > 1e-2


def test_chunks_keep_one_map_within_its_budget():
    pytest.importorskip("triton")
    from mta_lab.attention.backends.triton_flashmix import chunk_rows

    assert chunk_rows(1, 16, 4096, 2, 16, 64) == 512  # 16 heads x 512 rows x 4096 keys x 2 bytes = 64 MiB
    assert chunk_rows(1, 16, 100, 2, 16, 64) == 112  # the whole (padded) sequence when it fits
    assert chunk_rows(8, 16, 32768, 2, 16, 1) == 16  # never fewer than one tile


# (weights, shape, dtype): H = 16 (one tile of heads) and H = 3 (padded), T below one tile, odd and across chunks,
# B > 1, grouped post mixing.
MIXING_CASES = [
    (("head_pre", "head_post"), (1, 16, 1000, 96), torch.bfloat16),
    (("head_pre", "head_post"), (2, 16, 300, 64), torch.float32),
    (("head_pre",), (3, 3, 129, 32), torch.bfloat16),
    (("head_post_grouped",), (2, 4, 77, 16), torch.float32),
    (("head_pre", "head_post"), (1, 16, 9, 96), torch.float32),
    (("head_pre", "head_post"), (4, 16, 2049, 96), torch.bfloat16),
]


@needs_cuda
@pytest.mark.skipif("triton_flashmix" not in backend_names(), reason="Triton is not installed")
@pytest.mark.parametrize(("names", "shape", "dtype"), MIXING_CASES)
def test_triton_flashmix_on_gpu_matches_eager(names, shape, dtype):
    assert_mixing_backend_on_gpu_matches_eager("triton_flashmix", names, shape, dtype)


@needs_cuda
@pytest.mark.skipif("triton_flashmix" not in backend_names(), reason="Triton is not installed")
def test_triton_flashmix_on_gpu_across_small_chunks(monkeypatch):
    monkeypatch.setenv("MTA_TRITON_FLASHMIX_BLOCKS", '{"CHUNK_MB": 0.5}')
    assert_mixing_backend_on_gpu_matches_eager("triton_flashmix", ("head_pre", "head_post"), (2, 16, 1500, 96),
                                               torch.bfloat16)


@needs_cuda
@pytest.mark.skipif("triton_flashmix" not in backend_names(), reason="Triton is not installed")
def test_talking_heads_model_on_gpu_with_triton_flashmix_matches_eager():
    from dataclasses import replace

    from mta_lab.attention.presets import load_preset

    spec = replace(load_preset("talking_heads"), backend="triton_flashmix")
    config, fast, slow = model_and_eager_twin(spec, 300, random_mixing=True)
    assert resolve("triton_flashmix", "cuda", {"head_pre": torch.eye(2), "head_post": torch.eye(2)[None]})
    tokens = torch.randint(0, config.vocab_size, (2, 300), device="cuda")
    assert_same_loss_and_grads(fast, slow, tokens)
