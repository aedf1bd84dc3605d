"""The "eager" backend: the reference op itself (materialised B×H×T×T maps, any device and dtype, every option)."""

from __future__ import annotations

from mta_lab.attention.backends import Backend, register
from mta_lab.attention.reference import multi_token_attention

register(Backend(
    "eager",
    multi_token_attention,
    description="reference: materialised B×H×T×T scores, any device and dtype",
    materialises=True,
))
