"""The stacked decomposition of the pre-softmax kq conv (stacked queries, key-convolved keys, exact band correction)
against the eager reference, with a materialised core, forward and all gradients, in float64."""

from __future__ import annotations

import itertools

import pytest
import torch
from attention_cases import KERNELS, SHAPES, assert_exact_in_float64, make_inputs, rel_err

from mta_lab.attention.decomposition import band_width, dense_core, kq_conv_attention
from mta_lab.attention.reference import multi_token_attention
from mta_lab.attention.spec import key_center


@pytest.mark.parametrize(("shape", "kernel"), list(itertools.product(SHAPES, KERNELS)))
def test_decomposition_is_exact_forward_and_backward(shape, kernel):
    assert_exact_in_float64(shape, kernel, dense_core, seed=hash((shape, kernel)) % 1000)


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


def test_key_offset_is_the_identity_tap_and_checks_pad_key():
    assert [key_center(11, p) for p in ("both", "left", "right")] == [5, 10, 0]
    with pytest.raises(ValueError, match="pad_key='middle': must be one of both, left, right"):
        key_center(3, "middle")
