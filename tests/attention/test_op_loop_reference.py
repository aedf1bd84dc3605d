"""Independent loop-based reference for the MTA attention op (docs/mta-spec.md, section 2).

The reference below evaluates the spec's index formulas literally, with plain Python loops over
batch, heads, query rows i, key columns j, kernel rows a and kernel columns b, on Python floats
(IEEE double, same as float64).  It deliberately uses no conv2d / einsum / matmul, so that it is an
independent check of `mta_lab.attention.reference.multi_token_attention`, not a re-implementation
of its vectorised tricks.
"""

from __future__ import annotations

import math

import pytest
import torch

from mta_lab.attention.reference import multi_token_attention

TOL = 1e-10
NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------------
# Loop reference
# ----------------------------------------------------------------------------------------------------


def _key_offset(pad_key: str, c_k: int) -> int:
    """First key offset read by kernel column b = 0 (spec step 2).

    both:  keys j - p .. j + p, p = (c_k - 1) / 2 (c_k odd)
    left:  keys j - (c_k - 1) .. j   (past keys only)
    right: keys j .. j + c_k - 1
    """
    if pad_key == "both":
        assert c_k % 2 == 1, "pad_key='both' needs an odd c_k"
        return -((c_k - 1) // 2)
    if pad_key == "left":
        return -(c_k - 1)
    if pad_key == "right":
        return 0
    raise ValueError(pad_key)


def _mask_zero_future(x: list) -> list:
    """Mask_0 (spec step 2 / step 5): x[h][i][j] with j > i set to 0 (returns a new nested list)."""
    return [[[row[j] if j <= i else 0.0 for j in range(len(row))] for i, row in enumerate(x_h)] for x_h in x]


def _kq_conv(z: list, kernel: list, pad_key: str) -> list:
    """Depthwise key-query convolution (spec step 2, reused by step 5), on an already Mask_0'ed z.

    S'[h, i, j] = sum_{a=0}^{c_q-1} sum_{b=0}^{c_k-1} theta_h[a, b] * Z[h, i - (c_q - 1) + a, j + off + b]
    with off given by `_key_offset`, and Z read as 0 outside [0, T) on both axes.
    """
    n_heads = len(z)
    t = len(z[0])
    c_q = len(kernel[0])
    c_k = len(kernel[0][0])
    off = _key_offset(pad_key, c_k)
    out = [[[0.0] * t for _ in range(t)] for _ in range(n_heads)]
    for h in range(n_heads):
        for i in range(t):
            for j in range(t):
                acc = 0.0
                for a in range(c_q):
                    ii = i - (c_q - 1) + a
                    if ii < 0 or ii >= t:
                        continue
                    for b in range(c_k):
                        jj = j + off + b
                        if jj < 0 or jj >= t:
                            continue
                        acc += kernel[h][a][b] * z[h][ii][jj]
                out[h][i][j] = acc
    return out


def _head_mix_full(s: list, w: list) -> list:
    """Pre-softmax head mixing (spec step 3): S''[h] = sum_{h'} W[h, h'] * S'[h'], W indexed [out, in]."""
    n_heads = len(s)
    t = len(s[0])
    out = [[[0.0] * t for _ in range(t)] for _ in range(n_heads)]
    for h in range(n_heads):
        for i in range(t):
            for j in range(t):
                acc = 0.0
                for h2 in range(n_heads):
                    acc += w[h][h2] * s[h2][i][j]
                out[h][i][j] = acc
    return out


def _head_mix_grouped(a_: list, u: list) -> list:
    """Post-softmax grouped head mixing (spec step 6).

    A_new[g * c_h + o] = sum_c U[g, c, o] * A[g * c_h + c]
    over groups of contiguous heads; U has shape (H / c_h, c_h, c_h).
    """
    n_heads = len(a_)
    t = len(a_[0])
    n_groups = len(u)
    c_h = len(u[0])
    assert n_groups * c_h == n_heads
    out = [[[0.0] * t for _ in range(t)] for _ in range(n_heads)]
    for g in range(n_groups):
        for o in range(c_h):
            for i in range(t):
                for j in range(t):
                    acc = 0.0
                    for c in range(c_h):
                        acc += u[g][c][o] * a_[g * c_h + c][i][j]
                    out[g * c_h + o][i][j] = acc
    return out


def _causal_softmax(s: list) -> list:
    """Spec step 4: set j > i to -inf, then softmax over keys (so future weights are exactly 0)."""
    out = []
    for s_h in s:
        t = len(s_h)
        rows = []
        for i in range(t):
            row = [s_h[i][j] if j <= i else NEG_INF for j in range(t)]
            m = max(row[: i + 1])
            e = [math.exp(x - m) if x != NEG_INF else 0.0 for x in row]
            tot = sum(e)
            rows.append([x / tot for x in e])
        out.append(rows)
    return out


def loop_reference(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both"):
    """Naive evaluation of the MTA pipeline, spec section 2, steps 1-8 (dropout, step 7, is off).

    1. S = q k^T / sqrt(d)                               (scale before any convolution)
    2. optional pre-softmax kq conv on Z = Mask_0(S)     (`_kq_conv`)
    3. optional pre-softmax full head mixing             (`_head_mix_full`)
    4. j > i -> -inf, softmax over keys                  (`_causal_softmax`)
    5. optional post-softmax kq conv on Mask_0(A), then future zeroed again, no renormalisation
    6. optional post-softmax grouped head mixing         (`_head_mix_grouped`)
    8. O = A v
    Inputs are (B, H, T, d) tensors; returns a float64 (B, H, T, d) tensor.
    """
    ql, kl, vl = q.tolist(), k.tolist(), v.tolist()
    kq_pre_l = kq_pre.tolist() if kq_pre is not None else None
    head_pre_l = head_pre.tolist() if head_pre is not None else None
    kq_post_l = kq_post.tolist() if kq_post is not None else None
    head_post_l = head_post.tolist() if head_post is not None else None
    n_batch, n_heads, t, d = q.shape
    scale = 1.0 / math.sqrt(d)
    result = []
    for n in range(n_batch):
        # Step 1: logits.
        s = [
            [
                [sum(ql[n][h][i][e] * kl[n][h][j][e] for e in range(d)) * scale for j in range(t)]
                for i in range(t)
            ]
            for h in range(n_heads)
        ]
        # Step 2: pre-softmax key-query convolution.
        if kq_pre_l is not None:
            s = _kq_conv(_mask_zero_future(s), kq_pre_l, pad_key)
        # Step 3: pre-softmax head mixing.
        if head_pre_l is not None:
            s = _head_mix_full(s, head_pre_l)
        # Step 4: -inf mask and softmax.
        a_ = _causal_softmax(s)
        # Step 5: post-softmax convolution, then future zeroed again, no renormalisation.
        if kq_post_l is not None:
            a_ = _mask_zero_future(_kq_conv(_mask_zero_future(a_), kq_post_l, pad_key))
        # Step 6: post-softmax grouped head mixing.
        if head_post_l is not None:
            a_ = _head_mix_grouped(a_, head_post_l)
        # Step 8: O = A v.
        o = [
            [[sum(a_[h][i][j] * vl[n][h][j][e] for j in range(t)) for e in range(d)] for i in range(t)]
            for h in range(n_heads)
        ]
        result.append(o)
    return torch.tensor(result, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _qkv(g: torch.Generator, b: int, h: int, t: int, d: int):
    shape = (b, h, t, d)
    return tuple(torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))


def _randn(g: torch.Generator, *shape: int, scale: float = 0.5) -> torch.Tensor:
    return scale * torch.randn(shape, generator=g, dtype=torch.float64)


def _identity_kernel(h: int, c_q: int, c_k: int, pad_key: str) -> torch.Tensor:
    """Kernel that reads only Z[i, j]: row c_q - 1, the column whose key offset is 0."""
    kern = torch.zeros(h, c_q, c_k, dtype=torch.float64)
    kern[:, c_q - 1, -_key_offset(pad_key, c_k)] = 1.0
    return kern


def _check(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.shape == ref.shape
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, atol=TOL, rtol=TOL)


# (pad_key, c_q, c_k, T): includes c_q = 1, c_k = 1, even c_k for left/right, and kernels larger than T.
KQ_CASES = [
    ("both", 1, 1, 5),
    ("both", 1, 3, 6),
    ("both", 3, 1, 6),
    ("both", 2, 3, 7),
    ("both", 3, 5, 8),
    ("both", 6, 7, 5),  # kernel larger than T on both axes
    ("both", 2, 9, 4),  # c_k > T
    ("left", 1, 1, 5),
    ("left", 1, 2, 6),
    ("left", 3, 1, 6),
    ("left", 2, 4, 7),
    ("left", 3, 5, 8),
    ("left", 7, 6, 5),  # kernel larger than T
    ("right", 1, 1, 5),
    ("right", 1, 2, 6),
    ("right", 3, 1, 6),
    ("right", 2, 4, 7),
    ("right", 3, 3, 8),
    ("right", 6, 8, 5),  # kernel larger than T
]
KQ_IDS = [f"{p}-cq{cq}-ck{ck}-T{t}" for p, cq, ck, t in KQ_CASES]


# ----------------------------------------------------------------------------------------------------
# Tests of the reference itself (do not need the op to be correct)
# ----------------------------------------------------------------------------------------------------


def test_reference_plain_matches_masked_softmax():
    """Sanity of the loop reference: with every option off it is causal softmax attention."""
    g = _gen(101)
    q, k, v = _qkv(g, 2, 3, 6, 4)
    ref = loop_reference(q, k, v)
    t = q.shape[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(ref, torch.softmax(s, dim=-1) @ v, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
def test_reference_identity_init_is_plain_attention(pad_key):
    g = _gen(102)
    h, c_q, c_k = 4, 2, 3
    q, k, v = _qkv(g, 1, h, 6, 3)
    ident = _identity_kernel(h, c_q, c_k, pad_key)
    ref = loop_reference(
        q,
        k,
        v,
        kq_pre=ident,
        head_pre=torch.eye(h, dtype=torch.float64),
        kq_post=ident,
        head_post=torch.eye(2, dtype=torch.float64).expand(2, 2, 2).clone(),
        pad_key=pad_key,
    )
    torch.testing.assert_close(ref, loop_reference(q, k, v), atol=TOL, rtol=TOL)


def test_reference_hand_computed_query_shift():
    """A pre kernel with a single 1 at (a=0, b=p) on c_q=2 makes row i read logits of query row i-1 (Z
    masked), so row 0 gets all-zero logits (uniform over its one key) and row i>=1 gets S[i-1, j] for
    j <= i-1 and Z[i-1, i] = 0 at j = i."""
    g = _gen(103)
    q, k, v = _qkv(g, 1, 1, 4, 2)
    kern = torch.zeros(1, 2, 3, dtype=torch.float64)
    kern[0, 0, 1] = 1.0
    ref = loop_reference(q, k, v, kq_pre=kern, pad_key="both")
    s = (q[0, 0] @ k[0, 0].T) / math.sqrt(2)
    t = 4
    expected = torch.zeros(t, 2, dtype=torch.float64)
    for i in range(t):
        row = [(s[i - 1, j].item() if (i >= 1 and j <= i - 1) else 0.0) for j in range(i + 1)]
        logits = torch.tensor(row, dtype=torch.float64)
        w = torch.softmax(logits, dim=0)
        expected[i] = w @ v[0, 0, : i + 1]
    torch.testing.assert_close(ref[0, 0], expected, atol=TOL, rtol=TOL)


# ----------------------------------------------------------------------------------------------------
# Op vs loop reference
# ----------------------------------------------------------------------------------------------------


def test_all_none_equals_plain_causal_attention():
    g = _gen(1)
    q, k, v = _qkv(g, 2, 3, 7, 4)
    out = multi_token_attention(q, k, v, dropout_p=0.0)
    _check(out, loop_reference(q, k, v))


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
def test_all_none_ignores_pad_key(pad_key):
    g = _gen(2)
    q, k, v = _qkv(g, 1, 2, 5, 3)
    _check(multi_token_attention(q, k, v, pad_key=pad_key), loop_reference(q, k, v))


@pytest.mark.parametrize(("pad_key", "c_q", "c_k", "t"), KQ_CASES, ids=KQ_IDS)
def test_pre_conv_alone(pad_key, c_q, c_k, t):
    g = _gen(1000 + 17 * c_q + c_k + t)
    h = 2
    q, k, v = _qkv(g, 2, h, t, 3)
    kern = _randn(g, h, c_q, c_k)
    out = multi_token_attention(q, k, v, kq_pre=kern, pad_key=pad_key)
    _check(out, loop_reference(q, k, v, kq_pre=kern, pad_key=pad_key))


@pytest.mark.parametrize(("pad_key", "c_q", "c_k", "t"), KQ_CASES, ids=KQ_IDS)
def test_post_conv_alone(pad_key, c_q, c_k, t):
    g = _gen(2000 + 17 * c_q + c_k + t)
    h = 2
    q, k, v = _qkv(g, 2, h, t, 3)
    kern = _randn(g, h, c_q, c_k)
    out = multi_token_attention(q, k, v, kq_post=kern, pad_key=pad_key)
    _check(out, loop_reference(q, k, v, kq_post=kern, pad_key=pad_key))


@pytest.mark.parametrize("h", [2, 3, 4])
def test_head_pre_alone(h):
    g = _gen(3000 + h)
    q, k, v = _qkv(g, 2, h, 6, 4)
    w = _randn(g, h, h)
    out = multi_token_attention(q, k, v, head_pre=w)
    _check(out, loop_reference(q, k, v, head_pre=w))


@pytest.mark.parametrize(("h", "c_h"), [(2, 1), (2, 2), (4, 1), (4, 2), (4, 4)])
def test_head_post_alone(h, c_h):
    g = _gen(4000 + 10 * h + c_h)
    q, k, v = _qkv(g, 2, h, 6, 3)
    u = _randn(g, h // c_h, c_h, c_h)
    out = multi_token_attention(q, k, v, head_post=u)
    _check(out, loop_reference(q, k, v, head_post=u))


def test_head_post_orientation_is_in_out():
    """U indexed [group, in, out]: a non-symmetric U distinguishes it from its transpose."""
    g = _gen(4500)
    h = 2
    q, k, v = _qkv(g, 1, h, 5, 3)
    u = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)
    out = multi_token_attention(q, k, v, head_post=u)
    _check(out, loop_reference(q, k, v, head_post=u))
    # head 1 output = 2 * A[0] v + 1 * A[1] v; head 0 output = A[0] v.
    plain = loop_reference(q, k, v)
    a0v = plain[:, 0]
    torch.testing.assert_close(out[:, 0], a0v, atol=TOL, rtol=TOL)


def test_head_pre_orientation_is_out_in():
    """W indexed [out, in]: a non-symmetric W distinguishes it from its transpose."""
    g = _gen(4600)
    h = 2
    q, k, v = _qkv(g, 1, h, 5, 3)
    w = torch.tensor([[1.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    out = multi_token_attention(q, k, v, head_pre=w)
    _check(out, loop_reference(q, k, v, head_pre=w))
    torch.testing.assert_close(out[:, 0], loop_reference(q, k, v)[:, 0], atol=TOL, rtol=TOL)


ALL_CASES = [
    # (pad_key, c_q, c_k, T, H, c_h)
    ("both", 1, 1, 5, 2, 1),
    ("both", 2, 3, 7, 4, 2),
    ("both", 3, 5, 9, 4, 4),
    ("both", 6, 7, 5, 2, 2),  # kernel larger than T
    ("left", 1, 2, 6, 2, 2),
    ("left", 3, 4, 8, 4, 1),
    ("left", 6, 7, 5, 4, 4),  # kernel larger than T
    ("right", 3, 1, 6, 2, 1),
    ("right", 2, 4, 8, 4, 2),
    ("right", 7, 6, 5, 4, 4),  # kernel larger than T
]


@pytest.mark.parametrize(
    ("pad_key", "c_q", "c_k", "t", "h", "c_h"),
    ALL_CASES,
    ids=[f"{p}-cq{cq}-ck{ck}-T{t}-H{h}-ch{ch}" for p, cq, ck, t, h, ch in ALL_CASES],
)
def test_all_options_together(pad_key, c_q, c_k, t, h, c_h):
    g = _gen(5000 + 101 * c_q + 13 * c_k + 7 * t + h + c_h)
    q, k, v = _qkv(g, 2, h, t, 4)
    kq_pre = _randn(g, h, c_q, c_k)
    head_pre = _randn(g, h, h)
    kq_post = _randn(g, h, c_q, c_k)
    head_post = _randn(g, h // c_h, c_h, c_h)
    kwargs = dict(kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post, pad_key=pad_key)
    out = multi_token_attention(q, k, v, dropout_p=0.0, **kwargs)
    _check(out, loop_reference(q, k, v, **kwargs))


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
def test_identity_init_op_is_plain_attention(pad_key):
    g = _gen(6000)
    h, c_q, c_k = 4, 3, 5
    q, k, v = _qkv(g, 2, h, 7, 3)
    ident = _identity_kernel(h, c_q, c_k, pad_key)
    out = multi_token_attention(
        q,
        k,
        v,
        kq_pre=ident,
        head_pre=torch.eye(h, dtype=torch.float64),
        kq_post=ident.clone(),
        head_post=torch.eye(4, dtype=torch.float64).unsqueeze(0),
        pad_key=pad_key,
    )
    _check(out, loop_reference(q, k, v))


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
def test_op_is_causal(pad_key):
    """Rows i < t0 of the output must not change when q, k, v at positions >= t0 change (spec step 2)."""
    g = _gen(7000)
    h, t, t0 = 4, 8, 4
    q, k, v = _qkv(g, 1, h, t, 3)
    kwargs = dict(
        kq_pre=_randn(g, h, 3, 5),
        head_pre=_randn(g, h, h),
        kq_post=_randn(g, h, 3, 5),
        head_post=_randn(g, 2, 2, 2),
        pad_key=pad_key,
    )
    out1 = multi_token_attention(q, k, v, **kwargs)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t0:] = torch.randn(x[:, :, t0:].shape, generator=g, dtype=torch.float64)
    out2 = multi_token_attention(q2, k2, v2, **kwargs)
    torch.testing.assert_close(out1[:, :, :t0], out2[:, :, :t0], atol=TOL, rtol=TOL)
