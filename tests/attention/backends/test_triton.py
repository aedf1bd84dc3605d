"""The hand-written Triton kernels of the stacked kq-conv attention (`attention/backends/triton.py`) against eager.

Where Triton is installed but no GPU is, the kernels run in Triton's interpreter (TRITON_INTERPRET=1, which
must be set before Triton is imported, hence a subprocess); the interpreter needs numpy < 2.3. On a GPU they
run compiled in the GPU cases below (backend "triton"). Without Triton the interpreter test skips.
"""

from __future__ import annotations

import pytest
from attention_cases import GPU_CASES, assert_kq_backend_on_gpu_matches_eager, needs_cuda
from triton_interpreter import SKIP, run_interpreted

from mta_lab.attention.backends import backend_names

CHECK = r"""
import json, torch
from mta_lab.attention.reference import multi_token_attention
from mta_lab.attention.decomposition import kq_conv_attention
from mta_lab.attention.backends.triton import triton_core

def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()

torch.manual_seed(0)
worst = {}
# T not a multiple of the 32-row tiles, T below the kernel size, width c_q*d not a multiple of 64, W = 0.
for (b, h, t, d), (c_q, c_k, pad_key) in [((1, 2, 37, 8), (2, 9, "both")), ((2, 1, 70, 16), (6, 11, "right")),
                                         ((1, 1, 5, 8), (3, 4, "left")), ((1, 2, 33, 8), (1, 1, "both")),
                                         ((1, 1, 40, 24), (3, 5, "both"))]:
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    kernel = torch.randn(h, c_q, c_k, requires_grad=True)
    ref = multi_token_attention(q, k, v, kq_pre=kernel, pad_key=pad_key)
    out = kq_conv_attention(q, k, v, kernel, pad_key, core=triton_core)
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, (q, k, v, kernel), grad)
    got = torch.autograd.grad(out, (q, k, v, kernel), grad)
    for name, a, e in zip(("out", "q", "k", "v", "kernel"), (out, *got), (ref, *expected)):
        worst[name] = max(worst.get(name, 0.0), rel(a, e))
print(json.dumps(worst))
"""


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_triton_kernels_match_eager_in_the_interpreter():
    worst = run_interpreted(CHECK)
    assert set(worst) == {"out", "q", "k", "v", "kernel"}
    for name, err in worst.items():
        assert err < 1e-5, (name, err)


@needs_cuda
@pytest.mark.skipif("triton" not in backend_names(), reason="Triton is not installed")
@pytest.mark.parametrize(("shape", "kernel", "dtype"), GPU_CASES)
def test_triton_on_gpu_matches_eager(shape, kernel, dtype):
    assert_kq_backend_on_gpu_matches_eager(shape, kernel, dtype, "triton")
