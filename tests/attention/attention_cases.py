"""Inputs, error measure and checks shared by the tests of the reference, the decomposition and the backends."""

from __future__ import annotations

import pytest
import torch

from mta_lab.attention.decomposition import kq_conv_attention
from mta_lab.attention.reference import multi_token_attention

CUDA = torch.cuda.is_available()

# (c_q, c_k, pad_key): the toy kernels, the paper's 6x11, c_q = 1, even c_k, a 1x1 kernel.
KERNELS = [(2, 9, "both"), (2, 15, "both"), (6, 11, "both"), (6, 11, "left"), (6, 11, "right"), (1, 3, "both"),
           (3, 4, "left"), (3, 4, "right"), (1, 1, "both"), (4, 9, "right")]
# (B, H, T, d): T not a multiple of any tile, T shorter than the kernel, B·H large.
SHAPES = [(2, 3, 37, 8), (1, 2, 5, 4), (1, 1, 1, 4), (16, 8, 19, 4)]

# Each case compiles a kernel, so the GPU matrix is a chosen list: the toy model's heads (d = 128, T = 320),
# the 880M's (d = 96) with the paper's 6x11, tiny T, T shorter than the kernel, T not a multiple of a tile,
# B·H large, every pad_key.
GPU_CASES = [
    ((2, 2, 326, 128), (2, 15, "both"), torch.bfloat16),
    ((1, 4, 1000, 96), (6, 11, "both"), torch.bfloat16),
    ((2, 16, 300, 64), (4, 9, "right"), torch.float32),
    ((1, 2, 5, 32), (6, 11, "left"), torch.bfloat16),
    ((32, 8, 130, 16), (3, 4, "right"), torch.float32),
]


def needs_cuda(test):
    """A GPU test: marked `gpu` and skipped cleanly without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")(test))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30)).item()


def make_inputs(shape, c_q, c_k, *, dtype, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, t, d = shape
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3))
    kernel = torch.randn(h, c_q, c_k, generator=g, dtype=torch.float64)  # random, far from identity
    return [x.to(device=device, dtype=dtype).requires_grad_() for x in (q, k, v, kernel)]


def assert_exact_in_float64(shape, kernel, core, seed):
    """kq_conv_attention through `core` equals the eager op, forward and the gradients of q, k, v, kernel."""
    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, seed=seed)
    ref = multi_token_attention(q, k, v, kq_pre=theta, pad_key=pad_key)
    out = kq_conv_attention(q, k, v, theta, pad_key, core=core)
    assert rel_err(out, ref) < 1e-12
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, theta), grad_out)
    got = torch.autograd.grad(out, (q, k, v, theta), grad_out)
    for name, a, b in zip("q k v kernel".split(), got, expected, strict=True):
        assert rel_err(a, b) < 1e-12, name


def assert_kq_backend_on_gpu_matches_eager(shape, kernel, dtype, backend):
    """A kq-only backend on CUDA in `dtype` against the float64 reference, forward and every gradient."""
    from mta_lab.attention.backends import resolve

    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, device="cuda", seed=11)
    theta_ = (theta.detach() / c_q).requires_grad_()  # keep scores O(1) so bf16 softmax is well conditioned
    ref = multi_token_attention(q, k, v, kq_pre=theta_, pad_key=pad_key)
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, theta_), grad_out)
    inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    kern = theta_.detach().float().requires_grad_()  # parameters stay float32 under autocast
    fn = resolve(backend, "cuda", {"kq_pre": kern}).fn
    out = fn(*inputs, kq_pre=kern, pad_key=pad_key)
    got = torch.autograd.grad(out, (*inputs, kern), grad_out.to(dtype))
    budget = 2e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    assert rel_err(out, ref) < budget
    for name, a, b in zip("q k v kernel".split(), got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < budget * 2, name


def assert_mixing_backend_on_gpu_matches_eager(backend, names, shape, dtype):
    """A backend of calls with head mixing on CUDA in `dtype`, with the weights `names`, against float64 eager."""
    from mta_lab.attention.backends import resolve

    b, h, t, d = shape
    g = torch.Generator(device="cuda").manual_seed(3)

    def rand(*size, scale=1.0):
        return (scale * torch.randn(*size, device="cuda", dtype=torch.float64, generator=g)).requires_grad_()

    q, k, v = rand(b, h, t, d), rand(b, h, t, d), rand(b, h, t, d)
    makers = {"kq_pre": lambda: rand(h, 6, 11, scale=0.2), "head_pre": lambda: rand(h, h, scale=0.3),
              "kq_post": lambda: rand(h, 6, 11, scale=0.2), "head_post": lambda: rand(1, h, h, scale=0.3),
              "head_post_grouped": lambda: rand(h // 2, 2, 2, scale=0.5)}
    weights = {n.removesuffix("_grouped"): makers[n]() for n in names}
    ref = multi_token_attention(q, k, v, **weights)
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, *weights.values()), grad_out)
    inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    params = {n: w.detach().float().requires_grad_() for n, w in weights.items()}
    fn = resolve(backend, "cuda", params).fn
    out = fn(*inputs, **params)
    got = torch.autograd.grad(out, (*inputs, *params.values()), grad_out.to(dtype))
    budget = 2e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    assert rel_err(out, ref) < budget
    for name, a, e in zip(["q", "k", "v", *weights], got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, e) < budget * 2, name


def model_and_eager_twin(spec, seq_len: int, *, random_mixing: bool = False):
    """(config, model, eager): the tiny model with `spec` on the GPU and a copy with backend "eager" and the same
    weights; with random_mixing, the head-mixing matrices get noise (not the identity init)."""
    from dataclasses import replace

    from mta_lab.model.config import load_model_preset
    from mta_lab.model.transformer import build_model

    config = load_model_preset("tiny", max_seq_len=seq_len)
    torch.manual_seed(0)
    model = build_model(config, spec).cuda()
    if random_mixing:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "head_" in name:
                    p.add_(0.3 * torch.randn_like(p))
    eager = build_model(config, replace(spec, backend="eager")).cuda()
    eager.load_state_dict(model.state_dict())
    return config, model, eager


def backward_loss(model, tokens, *, autocast: bool = False) -> torch.Tensor:
    """The next-token loss of `model` on `tokens` (its gradients accumulated), under bf16 autocast if asked."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.double().flatten(0, 1), tokens.flatten())
    loss.backward()
    return loss


def assert_same_loss_and_grads(model, eager, tokens) -> None:
    losses = [backward_loss(m, tokens) for m in (model, eager)]
    assert rel_err(losses[0], losses[1]) < 1e-5
    for (name, a), b in zip(model.named_parameters(), eager.parameters(), strict=True):
        assert rel_err(a.grad, b.grad) < 1e-3, name
