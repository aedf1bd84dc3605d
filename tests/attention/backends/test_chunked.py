"""The "chunked" backend: the reference op computed in query chunks with halos and recomputation.

Checked against the eager reference (forward and the gradients of q, k, v and of every kernel / mixing matrix)
on random inputs and random, non-identity parameters, for every option combination and many shapes; dropout by
its statistics and by the consistency of its recomputed mask; memory by the sizes of the tensors saved for
backward.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mta_lab.attention.backends import resolve
from mta_lab.attention.backends.chunked import _chunk_rows, chunked_multi_token_attention, default_chunk
from mta_lab.attention.backends.policy import RULES, preference
from mta_lab.attention.reference import multi_token_attention

PAD_KEYS = ("both", "left", "right")
NAMES = ("kq_pre", "head_pre", "kq_post", "head_post")


def make_inputs(b, h, t, d, *, pre=None, head_pre=False, post=None, c_h=None, dtype=torch.float64, seed=0):
    """Random q, k, v and random (non-identity) parameters, all requiring grad; absent options are None."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()

    q, k, v = (rand(b, h, t, d) for _ in range(3))
    options = {
        "kq_pre": rand(h, *pre, scale=0.5) if pre else None,
        "head_pre": rand(h, h, scale=0.5) if head_pre else None,
        "kq_post": rand(h, *post, scale=0.5) if post else None,
        "head_post": rand(h // c_h, c_h, c_h, scale=0.5) if c_h else None,
    }
    weight = torch.randn(b, h, t, d, generator=g, dtype=torch.float64).to(dtype)  # loss direction
    return (q, k, v), options, weight


def forward_and_grads(fn, qkv, options, weight, **kwargs):
    leaves = [*qkv, *(x for x in options.values() if x is not None)]
    out = fn(*qkv, **options, **kwargs)
    grads = torch.autograd.grad((out * weight).sum(), leaves)
    return out, grads


def assert_rel_close(actual, expected, tol):
    """Equal up to tol relative to the largest entry of the expected tensor (scale-free for grads)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-30))


def check_against_eager(qkv, options, weight, chunks, tol, pad_key="both"):
    ref_out, ref_grads = forward_and_grads(multi_token_attention, qkv, options, weight, pad_key=pad_key)
    for chunk in chunks:
        out, grads = forward_and_grads(chunked_multi_token_attention, qkv, options, weight, pad_key=pad_key,
                                       chunk=chunk)
        assert_rel_close(out, ref_out, tol)
        for got, want in zip(grads, ref_grads, strict=True):
            assert_rel_close(got, want, tol)


def kernels_for(pad_key):
    """(pre, post) kernel shapes: odd c_k for 'both', even c_k (allowed there) for 'left' / 'right'."""
    return ((3, 5), (4, 3)) if pad_key == "both" else ((3, 4), (2, 6))


@pytest.mark.parametrize("pad_key", PAD_KEYS)
@pytest.mark.parametrize("present", list(itertools.product([False, True], repeat=4)),
                         ids=lambda p: "+".join(n for n, on in zip(NAMES, p, strict=True) if on) or "plain")
def test_every_option_combination_matches_eager(pad_key, present):
    pre, post = kernels_for(pad_key)
    use_pre, use_head_pre, use_post, use_head_post = present
    qkv, options, weight = make_inputs(
        2, 4, 23, 8, pre=pre if use_pre else None, head_pre=use_head_pre, post=post if use_post else None,
        c_h=2 if use_head_post else None, seed=hash((pad_key, present)) % 1000,
    )
    # 23 is a multiple of none of these; 1 and 2 are smaller than the halo (up to 2 + 3 rows)
    check_against_eager(qkv, options, weight, chunks=(1, 2, 5, 16), tol=1e-10, pad_key=pad_key)


SHAPES = [
    # (B, H, T, d, pre, head_pre, post, c_h, pad_key, chunks)
    (1, 2, 3, 4, (6, 11), True, (6, 11), 2, "both", (1, 2, 3)),  # T < kernel size, kernels larger than T
    (1, 2, 1, 4, (6, 11), True, (6, 11), 1, "both", (1, 4)),  # T = 1
    (2, 2, 7, 4, (6, 11), False, (6, 11), None, "both", (1, 3, 4)),  # halo 10 rows > T
    (2, 2, 9, 4, (8, 12), True, (5, 10), 2, "left", (2, 4)),
    (2, 2, 9, 4, (8, 12), True, (5, 10), 2, "right", (2, 4)),
    (2, 4, 17, 8, (1, 5), True, (1, 3), 4, "both", (1, 4, 6)),  # c_q = 1: no query halo
    (2, 4, 17, 8, (1, 4), False, (1, 2), None, "left", (3, 7)),
    (2, 4, 17, 8, (1, 1), True, (2, 1), 2, "right", (3, 5)),
    (2, 4, 32, 8, (6, 11), True, (6, 11), 4, "both", (8, 16, 32, 64)),  # T a multiple of the chunk; chunk > T
    (3, 8, 40, 16, (4, 9), True, (6, 11), 8, "both", (7, 13)),  # B·H = 24
    (3, 8, 40, 16, (4, 8), True, (3, 6), 2, "left", (9,)),
    (3, 8, 40, 16, (4, 8), True, (3, 6), 2, "right", (9,)),
]


@pytest.mark.parametrize(("b", "h", "t", "d", "pre", "head_pre", "post", "c_h", "pad_key", "chunks"), SHAPES)
def test_shapes_match_eager_float64(b, h, t, d, pre, head_pre, post, c_h, pad_key, chunks):
    qkv, options, weight = make_inputs(b, h, t, d, pre=pre, head_pre=head_pre, post=post, c_h=c_h, seed=t)
    check_against_eager(qkv, options, weight, chunks=chunks, tol=1e-10, pad_key=pad_key)


@pytest.mark.parametrize("pad_key", PAD_KEYS)
def test_float32_matches_eager(pad_key):
    pre, post = kernels_for(pad_key)
    qkv, options, weight = make_inputs(2, 4, 45, 16, pre=pre, head_pre=True, post=post, c_h=4, dtype=torch.float32,
                                       seed=7)
    check_against_eager(qkv, options, weight, chunks=(1, 6, 16), tol=1e-5, pad_key=pad_key)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_computed_in_float32_like_eager(dtype):
    qkv, options, _ = make_inputs(2, 4, 20, 8, pre=(3, 5), head_pre=True, post=(2, 3), c_h=2, seed=3)
    qkv = [x.detach().to(dtype) for x in qkv]
    options = {name: x.detach() for name, x in options.items()}
    expected = multi_token_attention(*qkv, **options)
    out = chunked_multi_token_attention(*qkv, **options, chunk=6)
    assert out.dtype == dtype
    # both compute in float32 and round once; allow a one-ulp difference from float32 rounding
    torch.testing.assert_close(out.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_no_grad_path_matches_eager():
    qkv, options, _ = make_inputs(2, 4, 19, 8, pre=(3, 5), head_pre=True, post=(2, 3), c_h=2, seed=5)
    with torch.no_grad():
        expected = multi_token_attention(*qkv, **options)
        out = chunked_multi_token_attention(*qkv, **options, chunk=4)
    assert not out.requires_grad
    assert_rel_close(out, expected, 1e-12)


def test_dropout_statistics():
    """Dropout on the final weights: with v = 1 and no post conv, each output is a row sum of dropped-and-rescaled
    probabilities, whose mean is 1."""
    b, h, t, p = 4, 4, 128, 0.5
    qkv, options, _ = make_inputs(b, h, t, 8, pre=(3, 5), head_pre=True, seed=11)
    v = torch.ones(b, h, t, 8, dtype=torch.float64)
    torch.manual_seed(0)
    out = chunked_multi_token_attention(qkv[0], qkv[1], v, **options, dropout_p=p, chunk=16)
    assert out.shape == (b, h, t, 8) and torch.isfinite(out).all()
    row_sums = out[..., 0]
    assert abs(row_sums.mean().item() - 1.0) < 0.05
    assert not torch.allclose(row_sums, torch.ones_like(row_sums))  # something was dropped
    assert set(torch.unique(out[:, :, 0, 0]).tolist()) <= {0.0, 1.0 / (1 - p)}  # row 0: one key, kept or not
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in [qkv[0], qkv[1], *(o for o in options.values() if o is not None)])


def test_dropout_mask_is_the_same_in_recomputation():
    """With v = I (d = T) the output is the dropped weight matrix P itself, and dLoss/dv = Pᵀ·W: the backward's
    recomputed chunks must redraw exactly the forward's dropout mask."""
    b, h, t = 2, 2, 20
    qkv, options, _ = make_inputs(b, h, t, 8, pre=(2, 3), head_pre=True, post=(3, 3), c_h=2, seed=13)
    eye = torch.eye(t, dtype=torch.float64).expand(b, h, t, t).clone().requires_grad_()
    weight = torch.randn(b, h, t, t, dtype=torch.float64)
    torch.manual_seed(1)
    probs = chunked_multi_token_attention(qkv[0], qkv[1], eye, **options, dropout_p=0.3, chunk=3)
    probs.backward(weight)
    torch.testing.assert_close(eye.grad, probs.detach().transpose(-2, -1) @ weight, rtol=1e-12, atol=1e-12)
    torch.manual_seed(1)  # same seed, same draws: deterministic
    again = chunked_multi_token_attention(qkv[0], qkv[1], eye, **options, dropout_p=0.3, chunk=3)
    torch.testing.assert_close(again, probs, rtol=0, atol=0)


def saved_numels(fn):
    """Element counts of every tensor the autograd graph saves for backward while fn() runs."""
    sizes = []

    def pack(x):
        sizes.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = fn()
    return out, sizes


def test_memory_linear_in_t():
    """T = 512, chunk = 64: no B×H×T×T tensor is saved for backward, only inputs/outputs (the chunks are
    checkpointed) and, while one chunk is recomputed, its B×H×(chunk + halo)×T slab (plus the convolution's
    zero padding, c_q - 1 rows and c_k - 1 columns)."""
    b, h, t, d, chunk = 2, 2, 512, 8, 64
    qkv, options, weight = make_inputs(b, h, t, d, pre=(6, 11), head_pre=True, post=(6, 11), c_h=2, seed=17)
    halo = (6 - 1) + (6 - 1)
    bound = b * h * (chunk + halo + 5) * (t + 10)
    assert bound < b * h * t * t // 4

    out, sizes = saved_numels(lambda: chunked_multi_token_attention(*qkv, **options, chunk=chunk))
    assert max(sizes) <= b * h * t * d  # nothing bigger than q, k, v or the output survives the forward
    # what one chunk's recomputation saves (the last chunk is the widest: keys [0, T))
    tensors = (*qkv, *options.values())
    _, chunk_sizes = saved_numels(lambda: _chunk_rows(t - chunk, t, *tensors, "both", 0.0))
    assert max(chunk_sizes) <= bound
    # the same hook does see the reference's B×H×T×T tensors
    _, eager_sizes = saved_numels(lambda: multi_token_attention(*qkv, **options))
    assert max(eager_sizes) >= b * h * t * t

    # and the long sequence is still exact
    grads = torch.autograd.grad((out * weight).sum(), [*qkv, *options.values()])
    ref_out, ref_grads = forward_and_grads(multi_token_attention, qkv, options, weight)
    assert_rel_close(out, ref_out, 1e-10)
    for got, want in zip(grads, ref_grads, strict=True):
        assert_rel_close(got, want, 1e-10)


def test_registered_and_never_auto():
    options = {"kq_pre": torch.zeros(2, 3, 5), "head_pre": None, "kq_post": None, "head_post": None,
               "dropout_p": 0.0}
    backend = resolve("chunked", "cpu", options)
    assert backend.fn is chunked_multi_token_attention and preference("chunked") == len(RULES)  # no rule of auto's
    assert resolve("auto", "cpu", options).name != "chunked"


def test_default_chunk_bounds_the_slab():
    assert default_chunk(1, 1, 100) == 100
    assert default_chunk(1, 16, 4096) == 256
    assert 16 <= default_chunk(64, 32, 32768) < 256
    with pytest.raises(ValueError, match="chunk"):
        chunked_multi_token_attention(*(torch.zeros(1, 1, 4, 2) for _ in range(3)), chunk=0)
