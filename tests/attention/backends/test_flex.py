"""The "flex" backend (the stacked decomposition through FlexAttention) against the eager reference op.

On CPU, FlexAttention itself is checked forward-only (it has no CPU backward) and its autograd.Function (the band
correction's gradient from band dot products) with a materialised attend, in float64. The CUDA tests run the
compiled FlexAttention kernel, forward and backward, in float32 and bfloat16, and skip cleanly without a GPU.
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from attention_cases import (
    GPU_CASES,
    KERNELS,
    SHAPES,
    assert_exact_in_float64,
    assert_kq_backend_on_gpu_matches_eager,
    assert_same_loss_and_grads,
    make_inputs,
    model_and_eager_twin,
    needs_cuda,
    rel_err,
)

from mta_lab.attention.backends import backend_names, resolve
from mta_lab.attention.backends.flex import dense_attend, flex_core
from mta_lab.attention.decomposition import kq_conv_attention
from mta_lab.attention.reference import multi_token_attention


@pytest.mark.parametrize(("shape", "kernel"), list(itertools.product(SHAPES[:2], KERNELS)))
def test_band_attention_gradient_without_scatter_is_exact(shape, kernel):
    # flex_core's autograd.Function (C's gradient from band dot products) with a materialised attend.
    assert_exact_in_float64(shape, kernel, functools.partial(flex_core, attend=dense_attend), seed=31)


@pytest.mark.parametrize("kernel", KERNELS)
def test_flex_attention_forward_on_cpu(kernel):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = (x.detach() for x in make_inputs((2, 2, 45, 8), c_q, c_k, dtype=torch.float32, seed=7))
    with torch.no_grad():
        ref = multi_token_attention(q, k, v, kq_pre=theta, pad_key=pad_key)
        out = kq_conv_attention(q, k, v, theta, pad_key, core=flex_core)
    assert rel_err(out, ref) < 1e-5


@needs_cuda
@pytest.mark.parametrize(("shape", "kernel", "dtype"), GPU_CASES)
def test_flex_on_gpu_matches_eager(shape, kernel, dtype):
    assert_kq_backend_on_gpu_matches_eager(shape, kernel, dtype, "flex")


@needs_cuda
def test_model_on_gpu_uses_flex_and_matches_the_eager_backend():
    from dataclasses import replace

    from mta_lab.attention.presets import load_preset

    spec = replace(load_preset("t5_kq_6x11"), kernel_init="uniform", backend="flex")  # random kernels
    config, fast, slow = model_and_eager_twin(spec, 300)
    tokens = torch.randint(0, config.vocab_size, (2, 300), device="cuda")
    small = {"kq_pre": torch.zeros(1, 6, 11), "score_elements": 2 * 4 * 300**2}
    streaming = "triton" if "triton" in backend_names() else "flex"
    assert resolve("auto", "cuda", small).name == streaming
    assert resolve("auto", "cuda", {**small, "compiling": True}).name == "stacked"
    assert resolve("auto", "cuda", {**small, "compiling": True, "score_elements": 2**40}).name == streaming
    assert_same_loss_and_grads(fast, slow, tokens)
