"""The head-mixing kernels (`attention/backends/triton_mix.py`, backend "triton_mix") against the eager op, in
Triton's interpreter on a CPU (fp32, forward and every gradient: q, k, v, W₁ and W₂), and compiled on a GPU (the
`gpu` tests below). Without Triton this skips."""

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
import json, sys, torch
from mta_lab.attention.reference import multi_token_attention
from mta_lab.attention.backends.triton_mix import head_mix_attention

def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()

mutant = len(sys.argv) > 1
torch.manual_seed(0)
worst = {}
# (B, H, T, d) and (pre, post, c_h): H below the 16-row tile and odd, T below and across the 64-key blocks,
# B > 1, grouped and full post mixing, each mixing alone.
for (b, h, t, d), (pre, post, c_h) in [((1, 4, 37, 8), (True, True, 4)), ((2, 3, 20, 4), (True, False, 1)),
                                        ((1, 4, 5, 8), (False, True, 2)), ((1, 2, 150, 8), (True, True, 2))]:
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    weights = {}
    if pre:
        weights["head_pre"] = torch.randn(h, h, requires_grad=True)
    if post:
        weights["head_post"] = torch.randn(h // c_h, c_h, c_h, requires_grad=True)
    ref = multi_token_attention(q, k, v, **weights)
    pre_w = weights.get("head_pre")
    if mutant and pre_w is not None:  # [out, in] read as [in, out] must be caught
        pre_w = pre_w.t()
    got = head_mix_attention(q, k, v, pre_w, weights.get("head_post"))
    grad = torch.randn_like(ref)
    leaves = (q, k, v, *weights.values())
    expected, grads = torch.autograd.grad(ref, leaves, grad), torch.autograd.grad(got, leaves, grad)
    worst["out"] = max(worst.get("out", 0.0), rel(got, ref))
    for name, a, e in zip(("dq", "dk", "dv", *weights), grads, expected):
        worst[name] = max(worst.get(name, 0.0), rel(a, e))
print(json.dumps(worst))
"""


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_head_mixing_kernels_match_the_reference_in_the_interpreter():
    worst = run_interpreted(CHECK)
    assert set(worst) == {"out", "dq", "dk", "dv", "head_pre", "head_post"}
    for name, err in worst.items():
        assert err < 1e-5, (name, err)


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_a_transposed_mixing_matrix_is_caught():
    assert run_interpreted(CHECK.replace("mutant = len(sys.argv) > 1", "mutant = True"))["out"] > 1e-2


def test_grouped_post_mixing_is_a_block_diagonal_matrix():
    pytest.importorskip("triton")
    from mta_lab.attention.backends.triton_mix import full_post_matrix
    from mta_lab.attention.reference import mix_heads_post

    probs = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    weight = torch.randn(3, 2, 2, dtype=torch.float64)  # 3 groups of 2 heads, [group, in, out]
    matrix = full_post_matrix(weight)  # [out, in]
    assert torch.allclose(torch.einsum("oh,bhij->boij", matrix, probs), mix_heads_post(probs, weight))
    assert (matrix[:2, 2:] == 0).all() and (matrix[2:4, :2] == 0).all()


# (weights, shape, dtype): H = 16 (one tile of heads) and H = 3 (padded), T across its 64-key blocks, B > 1.
MIXING_CASES = [
    (("head_pre", "head_post"), (1, 16, 1000, 96), torch.bfloat16),
    (("head_pre", "head_post"), (2, 16, 300, 64), torch.float32),
    (("head_pre",), (3, 3, 129, 32), torch.bfloat16),
    (("head_post_grouped",), (2, 4, 77, 16), torch.float32),
]


@needs_cuda
@pytest.mark.skipif("triton_mix" not in backend_names(), reason="Triton is not installed")
@pytest.mark.parametrize(("names", "shape", "dtype"), MIXING_CASES)
def test_triton_mix_on_gpu_matches_eager(names, shape, dtype):
    assert_mixing_backend_on_gpu_matches_eager("triton_mix", names, shape, dtype)


@needs_cuda
@pytest.mark.skipif("triton_mix" not in backend_names(), reason="Triton is not installed")
def test_talking_heads_model_on_gpu_uses_triton_mix_and_matches_eager():
    from mta_lab.attention.presets import load_preset

    config, fast, slow = model_and_eager_twin(load_preset("talking_heads"), 300, random_mixing=True)
    assert resolve("auto", "cuda", {"head_pre": torch.eye(2), "head_post": torch.eye(2)[None]}).name == (
        "triton_mix")
    tokens = torch.randint(0, config.vocab_size, (2, 300), device="cuda")
    assert_same_loss_and_grads(fast, slow, tokens)
