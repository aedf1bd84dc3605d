"""The Triton kernels of the causal key-query convolution (`attention/backends/triton_conv.py`) and the
"triton_conv" backend against the reference (`reference.causal_kq_conv`, `multi_token_attention`), in Triton's
interpreter on a CPU (fp32, forward and every gradient), and compiled on a GPU (the `gpu` tests below, with the
paper config's model). Without Triton this skips.
"""

from __future__ import annotations

import copy

import pytest
import torch
from attention_cases import (
    assert_mixing_backend_on_gpu_matches_eager,
    backward_loss,
    model_and_eager_twin,
    needs_cuda,
    rel_err,
)
from triton_interpreter import SKIP, run_interpreted

from mta_lab.attention.backends import backend_names

CHECK = r"""
import json, sys, torch
from mta_lab.attention.reference import causal_kq_conv, multi_token_attention
from mta_lab.attention.backends.triton_conv import causal_kq_conv_triton, triton_conv_op

def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()

torch.manual_seed(0)
worst = {}
# T not a multiple of the 64 tile, T below the kernel, every pad_key, c_q = c_k = 1, B*H > 1.
for (b, h, t), (c_q, c_k, pad_key) in [((1, 2, 37), (2, 9, "both")), ((2, 1, 70), (6, 11, "right")),
                                       ((1, 2, 5), (3, 4, "left")), ((1, 3, 65), (1, 1, "both")),
                                       ((2, 2, 130), (6, 11, "both"))]:
    x = torch.randn(b, h, t, t, requires_grad=True)
    kernel = torch.randn(h, c_q, c_k, requires_grad=True)
    ref, got = causal_kq_conv(x, kernel, pad_key), causal_kq_conv_triton(x, kernel, pad_key)
    grad = torch.randn_like(ref)
    expected, grads = torch.autograd.grad(ref, (x, kernel), grad), torch.autograd.grad(got, (x, kernel), grad)
    for name, a, e in zip(("y", "dx", "dkernel"), (got, *grads), (ref, *expected)):
        worst[name] = max(worst.get(name, 0.0), rel(a, e))
# The whole op with every option (the paper's config, small).
b, h, t, d = 1, 4, 50, 8
q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
weights = dict(kq_pre=torch.randn(h, 3, 5), head_pre=torch.randn(h, h), kq_post=torch.randn(h, 3, 5),
               head_post=torch.randn(1, h, h))
weights = {n: w.requires_grad_() for n, w in weights.items()}
ref, got = multi_token_attention(q, k, v, **weights), triton_conv_op(q, k, v, **weights)
grad = torch.randn_like(ref)
leaves = (q, k, v, *weights.values())
expected, grads = torch.autograd.grad(ref, leaves, grad), torch.autograd.grad(got, leaves, grad)
worst["op"] = rel(got, ref)
worst["op grads"] = max(rel(a, e) for a, e in zip(grads, expected))
if len(sys.argv) > 1:  # mutation check: a kernel shifted by one key must be caught
    worst["mutant"] = rel(causal_kq_conv_triton(x, kernel.roll(1, dims=2), pad_key), causal_kq_conv(x, kernel, pad_key))
print(json.dumps(worst))
"""


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_triton_conv_matches_the_reference_in_the_interpreter():
    worst = run_interpreted(CHECK)
    assert set(worst) == {"y", "dx", "dkernel", "op", "op grads"}
    for name, err in worst.items():
        assert err < 1e-5, (name, err)


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_a_shifted_kernel_is_caught():
    assert run_interpreted(CHECK.replace("if len(sys.argv) > 1:", "if True:"))["mutant"] > 1e-2


# (weights, shape, dtype) of the calls with head mixing "triton_conv" implements.
MIXING_CASES = [
    (("kq_pre", "head_pre", "kq_post", "head_post"), (1, 16, 600, 32), torch.bfloat16),
    (("kq_pre", "head_pre", "kq_post", "head_post"), (2, 4, 130, 16), torch.float32),
]


@needs_cuda
@pytest.mark.skipif("triton_conv" not in backend_names(), reason="Triton is not installed")
@pytest.mark.parametrize(("names", "shape", "dtype"), MIXING_CASES)
def test_triton_conv_on_gpu_matches_eager(names, shape, dtype):
    assert_mixing_backend_on_gpu_matches_eager("triton_conv", names, shape, dtype)


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
