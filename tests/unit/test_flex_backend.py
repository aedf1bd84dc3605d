"""The backends built on the stacked decomposition ("stacked", "flex", "triton") against the eager reference op.

On CPU the decomposition (stacked queries, key-convolved keys, exact band correction) is checked with a
materialised core, forward and all gradients, in float64; FlexAttention itself is checked forward-only
(it has no CPU backward). The CUDA tests run the compiled FlexAttention kernel, forward and backward, in
float32 and bfloat16, and skip cleanly without a GPU.
"""

from __future__ import annotations

import copy
import functools
import itertools

import pytest
import torch

from mta_lab.attention.backends import backend_names, resolve_backend
from mta_lab.attention.flex import dense_attend, flex_core
from mta_lab.attention.functional import multi_token_attention
from mta_lab.attention.stacked import band_width, dense_core, kq_conv_attention

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")

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


@pytest.mark.parametrize(("shape", "kernel"), list(itertools.product(SHAPES, KERNELS)))
def test_decomposition_is_exact_forward_and_backward(shape, kernel):
    assert_exact_in_float64(shape, kernel, dense_core, seed=hash((shape, kernel)) % 1000)


@pytest.mark.parametrize(("shape", "kernel"), list(itertools.product(SHAPES[:2], KERNELS)))
def test_band_attention_gradient_without_scatter_is_exact(shape, kernel):
    # flex_core's autograd.Function (C's gradient from band dot products) with a materialised attend.
    assert_exact_in_float64(shape, kernel, functools.partial(flex_core, attend=dense_attend), seed=31)


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


def test_stacked_backend_with_dropout_draws_the_eager_mask():
    # Both materialise (B, H, T, T) probabilities in the same dtype: the same seed gives the same mask.
    q, k, v, theta = make_inputs((2, 2, 40, 8), 2, 9, dtype=torch.float64, seed=3)
    op = resolve_backend("stacked", "cpu", {"kq_pre": theta, "dropout_p": 0.3}).fn
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
    backend = resolve_backend("auto", "cpu", weights)
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


def test_auto_materialises_small_score_maps_and_streams_large_ones():
    from mta_lab.attention.flex import MATERIALISE_UP_TO, accepts_call

    kernel = torch.zeros(2, 2, 3)
    assert not accepts_call({"kq_pre": kernel, "score_elements": MATERIALISE_UP_TO})  # "stacked" is faster
    assert accepts_call({"kq_pre": kernel, "score_elements": MATERIALISE_UP_TO + 1})
    assert accepts_call({"kq_pre": kernel})  # no size given: the linear-memory path
    assert not accepts_call({"kq_pre": kernel, "dropout_p": 0.1, "score_elements": 2**40})


def test_registry_routes_only_what_each_backend_implements():
    kernel = torch.zeros(2, 2, 3)
    mix = torch.eye(2)
    assert resolve_backend("auto", "cpu", {"kq_pre": kernel}).name == "stacked"  # flex: no CPU backward
    assert resolve_backend("auto", "cpu", {"kq_pre": kernel, "dropout_p": 0.1}).name == "stacked"
    assert resolve_backend("auto", "cpu", {"kq_pre": kernel, "head_pre": mix}).name == "stacked"
    assert resolve_backend("auto", "cpu", {"head_pre": mix}).name == "eager"  # no kq conv to stack
    if CUDA:
        streaming = "triton" if "triton" in backend_names() else "flex"
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.0}).name == streaming
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "dropout_p": 0.1}).name == "stacked"
        assert resolve_backend("auto", "cuda", {"kq_pre": kernel, "head_pre": mix}).name == "stacked"
        paper = {"kq_pre": kernel, "head_pre": mix, "kq_post": kernel, "head_post": mix[None]}
        assert resolve_backend("auto", "cuda", paper).name == (
            "triton_conv" if "triton_conv" in backend_names() else "stacked")
        mixing = "triton_mix" if "triton_mix" in backend_names() else "eager"
        assert resolve_backend("auto", "cuda", {"head_pre": mix}).name == mixing  # nothing to convolve
        assert resolve_backend("auto", "cuda", {"head_pre": mix, "dropout_p": 0.1}).name == "eager"
    with pytest.raises(RuntimeError, match="does not"):
        resolve_backend("flex", "cpu", {"kq_pre": kernel})


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


GPU_BACKENDS = tuple(name for name in ("flex", "stacked", "triton") if name in backend_names())


@needs_cuda
@pytest.mark.parametrize(("shape", "kernel", "dtype", "backend"), [
    (*case, backend) for case, backend in itertools.product(GPU_CASES, GPU_BACKENDS)
])
def test_backend_on_gpu_matches_eager(shape, kernel, dtype, backend):
    c_q, c_k, pad_key = kernel
    q, k, v, theta = make_inputs(shape, c_q, c_k, dtype=torch.float64, device="cuda", seed=11)
    theta_ = (theta.detach() / c_q).requires_grad_()  # keep scores O(1) so bf16 softmax is well conditioned
    ref = multi_token_attention(q, k, v, kq_pre=theta_, pad_key=pad_key)
    grad_out = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, theta_), grad_out)
    inputs = [x.detach().to(dtype).requires_grad_() for x in (q, k, v)]
    kern = theta_.detach().float().requires_grad_()  # parameters stay float32 under autocast
    fn = resolve_backend(backend, "cuda", {"kq_pre": kern}).fn
    out = fn(*inputs, kq_pre=kern, pad_key=pad_key)
    got = torch.autograd.grad(out, (*inputs, kern), grad_out.to(dtype))
    budget = 2e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    assert rel_err(out, ref) < budget
    for name, a, b in zip("q k v kernel".split(), got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) < budget * 2, name


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


@needs_cuda
def test_model_on_gpu_uses_flex_and_matches_the_eager_backend():
    from dataclasses import replace

    from mta_lab.attention.presets import load_preset

    spec = replace(load_preset("t5_kq_6x11"), kernel_init="uniform", backend="flex")  # random kernels
    config, fast, slow = model_and_eager_twin(spec, 300)
    tokens = torch.randint(0, config.vocab_size, (2, 300), device="cuda")
    small = {"kq_pre": torch.zeros(1, 6, 11), "score_elements": 2 * 4 * 300**2}
    streaming = "triton" if "triton" in backend_names() else "flex"
    assert resolve_backend("auto", "cuda", small).name == streaming
    assert resolve_backend("auto", "cuda", {**small, "compiling": True}).name == "stacked"
    assert resolve_backend("auto", "cuda", {**small, "compiling": True, "score_elements": 2**40}).name == streaming
    assert_same_loss_and_grads(fast, slow, tokens)


# Backends of calls with head mixing, each with the op configs it implements: (backend, weights, shape, dtype).
# triton_mix: H = 16 (one tile of heads) and H = 3 (padded), T across its 64-key blocks, B > 1.
MIXING_CASES = [
    ("triton_conv", ("kq_pre", "head_pre", "kq_post", "head_post"), (1, 16, 600, 32), torch.bfloat16),
    ("triton_conv", ("kq_pre", "head_pre", "kq_post", "head_post"), (2, 4, 130, 16), torch.float32),
    ("triton_mix", ("head_pre", "head_post"), (1, 16, 1000, 96), torch.bfloat16),
    ("triton_mix", ("head_pre", "head_post"), (2, 16, 300, 64), torch.float32),
    ("triton_mix", ("head_pre",), (3, 3, 129, 32), torch.bfloat16),
    ("triton_mix", ("head_post_grouped",), (2, 4, 77, 16), torch.float32),
]


@needs_cuda
@pytest.mark.parametrize(("backend", "names", "shape", "dtype"), MIXING_CASES)
def test_mixing_backend_on_gpu_matches_eager(backend, names, shape, dtype):
    if backend not in backend_names():
        pytest.skip("Triton is not installed")
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
    fn = resolve_backend(backend, "cuda", params).fn
    out = fn(*inputs, **params)
    got = torch.autograd.grad(out, (*inputs, *params.values()), grad_out.to(dtype))
    budget = 2e-5 if dtype == torch.float32 else 2e-2
    assert out.dtype == dtype
    assert rel_err(out, ref) < budget
    for name, a, e in zip(["q", "k", "v", *weights], got, expected, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, e) < budget * 2, name


@needs_cuda
@pytest.mark.skipif("triton_mix" not in backend_names(), reason="Triton is not installed")
def test_talking_heads_model_on_gpu_uses_triton_mix_and_matches_eager():
    from mta_lab.attention.presets import load_preset

    config, fast, slow = model_and_eager_twin(load_preset("talking_heads"), 300, random_mixing=True)
    assert resolve_backend("auto", "cuda", {"head_pre": torch.eye(2), "head_post": torch.eye(2)[None]}).name == (
        "triton_mix")
    tokens = torch.randint(0, config.vocab_size, (2, 300), device="cuda")
    assert_same_loss_and_grads(fast, slow, tokens)


@needs_cuda
@pytest.mark.skipif("triton_mix" not in backend_names(), reason="Triton is not installed")
def test_paper_config_model_trains_under_autocast_on_gpu():
    """The paper config's model under bf16 autocast, as training runs it: auto (triton_conv on the kq layers,
    triton_mix on the others) and eager, both against the eager model in float64. The fast path must be about as
    accurate as eager under the same autocast (sums over T² terms, like the mixing gradients, lose digits in bf16
    on either path)."""
    from dataclasses import replace

    from mta_lab.attention.presets import load_preset

    spec = replace(load_preset("mta"), kernel_init="uniform")
    config, fast, slow = model_and_eager_twin(spec, 256, random_mixing=True)
    exact = copy.deepcopy(slow).double()
    tokens = torch.randint(0, config.vocab_size, (2, 256), device="cuda")
    losses = [backward_loss(m, tokens, autocast=m is not exact) for m in (fast, slow, exact)]
    assert rel_err(losses[0], losses[2]) < 1e-2
    for (name, a), b, e in zip(fast.named_parameters(), slow.parameters(), exact.parameters(), strict=True):
        assert rel_err(a.grad, e.grad) <= max(5e-2, 1.5 * rel_err(b.grad, e.grad)), name
