"""Registry of implementations of the MTA op.

Each backend is a function with the signature of `functional.multi_token_attention`, computing the same
function (tested against the eager reference). `resolve_backend("auto", ...)` picks the fastest available
backend that supports the device; fused backends register themselves with a higher priority.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mta_lab.attention import functional

OpFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Backend:
    name: str
    fn: OpFn
    priority: int  # higher wins under backend="auto"
    supports: Callable[[torch.device], bool]
    description: str


_REGISTRY: dict[str, Backend] = {}


def register_backend(
    name: str,
    fn: OpFn,
    *,
    priority: int,
    supports: Callable[[torch.device], bool],
    description: str,
) -> None:
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic selection")
    _REGISTRY[name] = Backend(name, fn, priority, supports, description)


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def backends() -> tuple[Backend, ...]:
    return tuple(sorted(_REGISTRY.values(), key=lambda b: -b.priority))


def resolve_backend(name: str, device: torch.device | str) -> Backend:
    """The backend for `name` ("auto" or a registered name) on `device`; a clear error if unusable."""
    device = torch.device(device)
    if name == "auto":
        usable = [b for b in backends() if b.supports(device)]
        if not usable:
            raise RuntimeError(f"no attention backend supports device {device}")
        return usable[0]
    if name not in _REGISTRY:
        raise ValueError(f"attention backend {name!r} is unknown; registered: {', '.join(backend_names())}")
    backend = _REGISTRY[name]
    if not backend.supports(device):
        usable = [b.name for b in backends() if b.supports(device)]
        raise RuntimeError(
            f"attention backend {name!r} does not run on {device}; use backend=auto or one of: {', '.join(usable)}"
        )
    return backend


register_backend(
    "eager",
    functional.multi_token_attention,
    priority=0,
    supports=lambda device: True,
    description="reference: materialised B×H×T×T scores, any device and dtype",
)
