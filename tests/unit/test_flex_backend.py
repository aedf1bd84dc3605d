"""The fused pre-softmax kq conv ("flex" backend) against the eager reference op.

On CPU the decomposition (stacked queries, key-convolved keys, exact band correction) is checked with a
materialised core, forward and all gradients, in float64; FlexAttention itself is checked forward-only
(it has no CPU backward). The CUDA tests run the compiled FlexAttention kernel, forward and backward, in
float32 and bfloat16, and skip cleanly without a GPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mta_lab.attention.backends import resolve_backend
from mta_lab.attention.flex import band_width, dense_core, flex_core, kq_conv_attention
from mta_lab.attention.functional import multi_token_attention

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (FlexAttention backward)")

# (c_q, c_k, pad_key): the toy kernels, the paper's 6x11, c_q = 1, even c_k, a 1x1 kernel.
KERNELS = [(2, 9, "both"), (2, 15, "both"), (6, 11, "both"), (6, 11, "left"), (6, 11, "right"), (1, 3, "both"),
           (3, 4, "left"), (3, 4, "right"), (1, 1, "both"), (4, 9, "right")]
# (B, H, T, d): T not a multiple of any tile, T shorter than the kernel, B·H large.
SHAPES = [(2, 3, 37, 8), (1, 2, 5, 4), (1, 1, 1, 4), (16, 8, 19, 4)]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def make_inputs(shape, c_q, c_k, *, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, t, d = shape
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3))
    kernel = torch.randn(h, c_q, c_k, generator=g, dtype=torch.float64)  # random, far from identity
    return [x.to(device=device, dtype=dtype).requires_grad_() for x in (q, k, v, kernel)]


@pytest.mark.parametrize(("shape", "kernel"), list(itertools.product(SHAPES, KERNELS)))
def test_decomposition_is_exact_forward_and_backward(shape, kernel):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, seed=hash((shape, kernel)) % 1000)
    ref = multi_token_attention(q, k, v, kq_pre=theta, pad_key=pad_key)
    out = kq_conv_attention(q, k, v, theta, pad_key, core=dense_core)
    assert rel_err(out, ref) < 1e-12
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, theta), grad_out)
    got = torch.autograd.grad(out, (q, k, v, theta), grad_out)
    for name, a, b in zip("q k v kernel".split(), got, expected, strict=True):
        assert rel_err(a, b) < 1e-12, name


def test_band_is_where_the_mask_matters():
    # Without the band correction the stacked product differs from the spec exactly on diagonals 0..W-1.
    q, k, v, theta = make_inputs((1, 1, 30, 4), 3, 5, dtype=torch.float64)
    w = band_width(3, 5, "both")
    assert w == 2 + 2

    def no_band(q_hat, k_hat, v_, correction, scale):
        return dense_core(q_hat, k_hat, v_, torch.zeros_like(correction), scale)

    with torch.no_grad():
        ref = multi_token_attention(q, k, v, kq_pre=theta)
        wrong = kq_conv_attention(q, k, v, theta, "both", core=no_band)
    assert rel_err(wrong, ref) > 1e-3


@pytest.mark.parametrize("kernel", KERNELS)
def test_flex_attention_forward_on_cpu(kernel):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = (x.detach() for x in make_inputs((2, 2, 45, 8), c_q, c_k, dtype=torch.float32, seed=7))
    with torch.no_grad():
        ref = multi_token_attention(q, k, v, kq_pre=theta, pad_key=pad_key)
        out = kq_conv_attention(q, k, v, theta, pad_key, core=flex_core)
    assert rel_err(out, ref) < 1e-5


def test_registry_routes_only_what_flex_implements():
    kernel = torch.zeros(2, 2, 3)
    mix = torch.eye(2)
    assert resolve_backend("auto", "cpu", {"kq_pre": kernel}).name == "eager"  # no CPU backward
    if CUDA:
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.0}).name == "flex"
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.1}).name != "flex"
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "head_pre": mix}).name != "flex"
    with pytest.raises(RuntimeError, match="does not"):
        resolve_backend("flex", "cpu", {"kq_pre": kernel})


GPU_SHAPES = [(2, 3, 37, 16), (1, 2, 5, 32), (2, 16, 300, 64), (1, 4, 1024, 96), (1, 2, 320, 128)]


@needs_cuda
@pytest.mark.parametrize(("shape", "kernel", "dtype"), [
    (s, k, dt) for s, k, dt in itertools.product(GPU_SHAPES, KERNELS, (torch.float32, torch.bfloat16))
])
def test_flex_backend_on_gpu_matches_eager(shape, kernel, dtype):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, device="cuda", seed=11)
    theta_ = (theta.detach() / c_q).requires_grad_()  # keep scores O(1) so bf16 softmax is well conditioned
    ref = multi_token_attention(q, k, v, kq_pre=theta_, pad_key=pad_key)
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, theta_), grad_out)
    inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    kern = theta_.detach().float().requires_grad_()  # parameters stay float32 under autocast
    fn = resolve_backend("flex", "cuda", {"kq_pre": kern}).fn
    out = fn(*inputs, kq_pre=kern, pad_key=pad_key)
    got = torch.autograd.grad(out, (*inputs, kern), grad_out.to(dtype))
    budget = 2e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    assert rel_err(out, ref) < budget
    for name, a, b in zip("q k v kernel".split(), got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < budget * 2, name
