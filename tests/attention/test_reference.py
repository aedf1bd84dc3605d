"""The reference op: identity invariant, causality, gradients and dtypes (spec §2)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mta_lab.attention.reference import kq_conv, multi_token_attention
from mta_lab.attention.spec import key_center

B, H, T, D = 2, 4, 11, 8
KERNELS = [(1, 1), (2, 3), (6, 11), (3, 5)]
PAD_KEYS = ["both", "left", "right"]


def qkv(dtype=torch.float64, seed=0, t=T, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, t, D, generator=g, dtype=torch.float64).to(dtype).requires_grad_(requires_grad)
            for _ in range(3)]


def identity_kernel(c_q, c_k, pad_key, dtype=torch.float64):
    kernel = torch.zeros(H, c_q, c_k, dtype=dtype)
    kernel[:, c_q - 1, key_center(c_k, pad_key)] = 1.0
    return kernel


def identity_post(c_h, dtype=torch.float64):
    return torch.eye(c_h, dtype=dtype).expand(H // c_h, c_h, c_h).clone()


def option_grid():
    """Every combination of (kq_pre, head_pre, kq_post, head_post) switched on or off, per pad_key."""
    return itertools.product(PAD_KEYS, [None, (2, 3), (6, 11)], [False, True], [None, (3, 5), (1, 1)], [None, 1, 2, H])


@pytest.mark.parametrize(("pad_key", "pre", "hpre", "post", "c_h"), list(option_grid()))
def test_identity_init_equals_causal_softmax(pad_key, pre, hpre, post, c_h):
    q, k, v = qkv()
    out = multi_token_attention(
        q, k, v,
        kq_pre=identity_kernel(*pre, pad_key) if pre else None,
        head_pre=torch.eye(H, dtype=torch.float64) if hpre else None,
        kq_post=identity_kernel(*post, pad_key) if post else None,
        head_post=identity_post(c_h) if c_h else None,
        pad_key=pad_key,
    )
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def random_options(pad_key, seed=1, dtype=torch.float64, pre=(3, 5), post=(2, 3), c_h=2):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    return dict(kq_pre=rand(H, *pre), head_pre=rand(H, H), kq_post=rand(H, *post),
                head_post=rand(H // c_h, c_h, c_h), pad_key=pad_key)


SINGLE_OPTIONS = ["kq_pre", "head_pre", "kq_post", "head_post", "all"]


def only(options: dict, which: str) -> dict:
    if which == "all":
        return options
    return {key: value for key, value in options.items() if key in (which, "pad_key")}


@pytest.mark.parametrize("pad_key", PAD_KEYS)
@pytest.mark.parametrize("which", SINGLE_OPTIONS)
@pytest.mark.parametrize("t_changed", [0, 4, T - 1])
def test_changing_token_t_leaves_earlier_outputs_unchanged(pad_key, which, t_changed):
    options = only(random_options(pad_key, pre=(4, 7), post=(3, 5)), which)
    q, k, v = qkv()
    base = multi_token_attention(q, k, v, **options)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t_changed] += 10.0 * torch.randn(B, H, D, dtype=torch.float64)
    changed = multi_token_attention(q2, k2, v2, **options)
    torch.testing.assert_close(changed[:, :, :t_changed], base[:, :, :t_changed], rtol=0, atol=1e-12)
    # ... and the change is visible from t on (otherwise this test could not fail).
    assert (changed[:, :, t_changed:] - base[:, :, t_changed:]).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pad_key", PAD_KEYS)
@pytest.mark.parametrize("which", SINGLE_OPTIONS)
def test_forward_backward_finite_and_close_to_float64(dtype, pad_key, which):
    options64 = only(random_options(pad_key), which)
    q64, k64, v64 = qkv()
    ref = multi_token_attention(q64, k64, v64, **options64)

    q, k, v = (x.detach().to(dtype).requires_grad_() for x in (q64, k64, v64))
    options = {key: (val.to(dtype).requires_grad_() if torch.is_tensor(val) else val)
               for key, val in options64.items()}
    out = multi_token_attention(q, k, v, **options)
    assert out.dtype == dtype and out.shape == (B, H, T, D)
    budget = {torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    rel = (out.double() - ref).norm() / ref.norm()
    assert rel < budget, f"relative error {rel:.2e} over budget {budget:.0e}"

    out.float().square().sum().backward()
    for name, tensor in [("q", q), ("k", k), ("v", v)] + [(n, t) for n, t in options.items() if torch.is_tensor(t)]:
        assert tensor.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(tensor.grad).all(), f"non-finite gradient for {name}"
        assert tensor.grad.abs().sum() > 0, f"zero gradient for {name}"


@pytest.mark.parametrize("pad_key", PAD_KEYS)
def test_gradcheck_all_options_float64(pad_key):
    g = torch.Generator().manual_seed(3)
    small = dict(dtype=torch.float64, requires_grad=True)
    q, k, v = (torch.randn(1, 2, 5, 3, generator=g, **small) for _ in range(3))
    kq_pre, kq_post = torch.randn(2, 2, 3, generator=g, **small), torch.randn(2, 3, 3, generator=g, **small)
    head_pre, head_post = torch.randn(2, 2, generator=g, **small), torch.randn(1, 2, 2, generator=g, **small)

    def fn(q, k, v, kq_pre, head_pre, kq_post, head_post):
        return multi_token_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post,
                                     head_post=head_post, pad_key=pad_key)

    assert torch.autograd.gradcheck(fn, (q, k, v, kq_pre, head_pre, kq_post, head_post))


@pytest.mark.parametrize("t", [1, 2, 5])
def test_sequences_shorter_than_the_kernel(t):
    q, k, v = qkv(t=t)
    out = multi_token_attention(q, k, v, **random_options("both", pre=(6, 11), post=(6, 11)))
    assert out.shape == (B, H, t, D) and torch.isfinite(out).all()
    # One token attends to itself only: every kernel tap but the identity reads zero padding.
    if t == 1:
        opts = random_options("both", pre=(6, 11), post=(6, 11), c_h=1)
        gain = opts["kq_post"][:, 5, 5].view(1, H, 1, 1) * opts["head_post"].view(1, H, 1, 1)
        torch.testing.assert_close(multi_token_attention(q, k, v, **opts), gain * v)


def test_head_post_full_mixes_across_all_heads():
    q, k, v = qkv()
    mix = torch.zeros(1, H, H, dtype=torch.float64)
    mix[0, 0, H - 1] = 1.0  # head H-1 takes head 0's probabilities ([group, in, out])
    out = multi_token_attention(q, k, v, head_post=mix)
    plain = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    probs0 = torch.softmax((q[:, 0] @ k[:, 0].mT / D**0.5).masked_fill(
        ~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")), -1)
    torch.testing.assert_close(out[:, H - 1], probs0 @ v[:, H - 1])
    assert out[:, :H - 1].abs().max() == 0
    assert not torch.allclose(out[:, H - 1], plain[:, H - 1])


def test_dropout_is_applied_as_given():
    q, k, v = qkv()
    torch.manual_seed(0)
    a = multi_token_attention(q, k, v, head_pre=torch.eye(H, dtype=torch.float64), dropout_p=0.5)
    b = multi_token_attention(q, k, v, head_pre=torch.eye(H, dtype=torch.float64), dropout_p=0.5)
    plain = multi_token_attention(q, k, v, head_pre=torch.eye(H, dtype=torch.float64))
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)


def test_kq_conv_rejects_mismatched_inputs():
    scores = torch.zeros(1, H, 4, 4)
    with pytest.raises(ValueError, match="odd c_k"):
        kq_conv(scores, torch.zeros(H, 2, 4), "both")
    with pytest.raises(ValueError, match="pad_key='middle'"):
        kq_conv(scores, torch.zeros(H, 2, 3), "middle")
    with pytest.raises(ValueError, match="kernel has 3 heads"):
        kq_conv(scores, torch.zeros(3, 2, 3), "both")


def test_rejects_bad_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"\(B, H, T, d\)"):
        multi_token_attention(q[0], k[0], v[0])
