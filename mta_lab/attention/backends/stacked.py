"""The "stacked" backend: the pre-softmax kq conv as one matrix product of stacked queries and key-convolved keys
with the exact band correction (`decomposition.py`), on materialised scores (tensor cores instead of a depthwise
convolution over B×H×T×T maps; dropout supported, any device). Calls that also mix heads or convolve after the
softmax run the reference's steps 3-8 on the stacked S'."""

from __future__ import annotations

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.decomposition import dense_core, kq_conv_attention, kq_pre_scores
from mta_lab.attention.reference import causal_kq_conv, materialised_attention


def has_kq_pre(options: dict) -> bool:
    """The call has a pre-softmax kq conv (whatever else it has): the part the stacked product replaces."""
    return options.get("kq_pre") is not None


def stacked_op(q, k, v, *, kq_pre=None, head_pre=None, kq_post=None, head_post=None, pad_key="both", dropout_p=0.0):
    """kq-only calls as one wide-head attention (`dense_core`); the others as the reference's steps 3-8 on the
    stacked S'."""
    if head_pre is None and kq_post is None and head_post is None:
        return kq_conv_attention(q, k, v, kq_pre, pad_key, core=dense_core, dropout_p=dropout_p)
    return materialised_attention(q, k, v, kq_pre=kq_pre, head_pre=head_pre, kq_post=kq_post, head_post=head_post,
                                  pad_key=pad_key, dropout_p=dropout_p, conv=causal_kq_conv,
                                  pre_scores=kq_pre_scores if kq_pre is not None else None)


register(Backend(
    "stacked",
    stacked_op,
    calls="calls with a pre-softmax kq conv (with any other option, dropout included)",
    implements=has_kq_pre,
    materialises=True,
    description="stacked queries x key-convolved keys + exact band as one matrix product (materialised scores, "
                "dropout; any device); the rest of the op as eager",
))
