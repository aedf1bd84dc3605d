"""The "stacked" backend (the stacked decomposition on materialised scores; every option and dropout) against the
eager reference op: on CPU in float64, and on a GPU in float32 and bfloat16."""

from __future__ import annotations

import itertools

import pytest
import torch
from attention_cases import GPU_CASES, assert_kq_backend_on_gpu_matches_eager, make_inputs, needs_cuda, rel_err

from mta_lab.attention.backends import resolve
from mta_lab.attention.reference import multi_token_attention


def test_stacked_backend_with_dropout_draws_the_eager_mask():
    # Both materialise (B, H, T, T) probabilities in the same dtype: the same seed gives the same mask.
    q, k, v, theta = make_inputs((2, 2, 40, 8), 2, 9, dtype=torch.float64, seed=3)
    op = resolve("stacked", "cpu", {"kq_pre": theta, "dropout_p": 0.3}).fn
    torch.manual_seed(5)
    ref = multi_token_attention(q, k, v, kq_pre=theta, dropout_p=0.3)
    torch.manual_seed(5)
    out = op(q, k, v, kq_pre=theta, dropout_p=0.3)
    assert rel_err(out, ref) < 1e-12
    assert rel_err(out, multi_token_attention(q, k, v, kq_pre=theta)) > 1e-2  # dropout did act


# Every combination of the other options with a pre-softmax kq conv: the stacked backend runs steps 3-8 of the
# reference on its S'.
OTHERS = [dict(zip(("head_pre", "kq_post", "head_post"), flags, strict=True))
          for flags in itertools.product((False, True), repeat=3) if any(flags)]


@pytest.mark.parametrize("others", OTHERS, ids=lambda o: "+".join(k for k, v in o.items() if v))
@pytest.mark.parametrize(("shape", "kernel"), [((2, 4, 23, 8), (6, 11, "both")), ((1, 2, 5, 4), (3, 4, "left")),
                                               ((1, 4, 30, 4), (2, 9, "right"))])
def test_stacked_backend_with_every_option_matches_eager(shape, kernel, others):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, seed=21)
    h = shape[1]
    g = torch.Generator().manual_seed(4)
    weights = {"kq_pre": theta}
    if others["head_pre"]:
        weights["head_pre"] = torch.randn(h, h, generator=g, dtype=torch.float64).requires_grad_()
    if others["kq_post"]:
        weights["kq_post"] = torch.randn(h, c_q, c_k, generator=g, dtype=torch.float64).requires_grad_()
    if others["head_post"]:
        weights["head_post"] = torch.randn(h // 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    backend = resolve("auto", "cpu", weights)
    assert backend.name == "stacked"
    ref = multi_token_attention(q, k, v, pad_key=pad_key, **weights)
    out = backend.fn(q, k, v, pad_key=pad_key, **weights)
    assert rel_err(out, ref) < 1e-12
    grad_out = torch.randn_like(ref)
    leaves = (q, k, v, *weights.values())
    expected = torch.autograd.grad(ref, leaves, grad_out)
    got = torch.autograd.grad(out, leaves, grad_out)
    for name, a, b in zip(["q", "k", "v", *weights], got, expected, strict=True):
        assert rel_err(a, b) < 1e-12, name
    torch.manual_seed(5)  # dropout: the same mask as eager's (same place, shape and dtype)
    ref = multi_token_attention(q, k, v, pad_key=pad_key, dropout_p=0.3, **weights)
    torch.manual_seed(5)
    assert rel_err(backend.fn(q, k, v, pad_key=pad_key, dropout_p=0.3, **weights), ref) < 1e-12


@needs_cuda
@pytest.mark.parametrize(("shape", "kernel", "dtype"), GPU_CASES)
def test_stacked_on_gpu_matches_eager(shape, kernel, dtype):
    assert_kq_backend_on_gpu_matches_eager(shape, kernel, dtype, "stacked")
