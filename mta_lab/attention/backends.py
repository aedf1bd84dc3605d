"""Registry of implementations of the MTA op.

Each backend is a function with the signature of `functional.multi_token_attention`, computing the same
function (tested against the eager reference). A backend says which devices it runs on (`supports`) and which
calls it handles (`accepts`, given the op's keyword arguments: some fast paths cover only some options).
`resolve_backend("auto", device, options)` picks the highest-priority backend that runs there and accepts the
call; the eager reference accepts everything, so "auto" always resolves.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mta_lab.attention import functional

OpFn = Callable[..., torch.Tensor]
OP_OPTIONS = ("kq_pre", "head_pre", "kq_post", "head_post")


@dataclass(frozen=True)
class Backend:
    name: str
    fn: OpFn
    priority: int  # higher wins under backend="auto"
    supports: Callable[[torch.device], bool]
    description: str
    accepts: Callable[[dict], bool]  # op keyword arguments (kq_pre=..., head_pre=..., ...) -> handled?
    materialises: bool = False  # holds B×H×T×T maps (peak memory quadratic in T), if only within one call
    # The options may also carry HINTS for the choice under "auto" (not op arguments): "score_elements" (B·H·T²)
    # and "compiling" (torch.compile is tracing the call).


HINTS = ("score_elements", "compiling")


_REGISTRY: dict[str, Backend] = {}


def register_backend(
    name: str,
    fn: OpFn,
    *,
    priority: int,
    supports: Callable[[torch.device], bool],
    description: str,
    accepts: Callable[[dict], bool] = lambda options: True,
    materialises: bool = False,
) -> None:
    if name == "auto":
        raise ValueError("'auto' is reserved for automatic selection")
    _REGISTRY[name] = Backend(name, fn, priority, supports, description, accepts, materialises)


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def backends() -> tuple[Backend, ...]:
    return tuple(sorted(_REGISTRY.values(), key=lambda b: -b.priority))


def resolve_backend(name: str, device: torch.device | str, options: dict | None = None) -> Backend:
    """The backend for `name` ("auto" or a registered name) on `device` for a call with keyword arguments
    `options` (None: any call); a clear error if unusable."""
    device = torch.device(device)
    options = options or {}
    if name == "auto":
        usable = [b for b in backends() if b.supports(device) and b.accepts(options)]
        if not usable:
            raise RuntimeError(f"no attention backend supports device {device} for this call")
        return usable[0]
    if name not in _REGISTRY:
        raise ValueError(f"attention backend {name!r} is unknown; registered: {', '.join(backend_names())}")
    backend = _REGISTRY[name]
    if not backend.supports(device):
        usable = [b.name for b in backends() if b.supports(device)]
        raise RuntimeError(
            f"attention backend {name!r} does not run on {device}; use backend=auto or one of: {', '.join(usable)}"
        )
    if options and not backend.accepts({k: v for k, v in options.items() if k not in HINTS}):
        raise RuntimeError(
            f"attention backend {name!r} does not implement this layer's options "
            f"({', '.join(k for k, v in options.items() if v is not None and k in OP_OPTIONS)}); use backend=auto"
        )
    return backend


register_backend(
    "eager",
    functional.multi_token_attention,
    priority=0,
    supports=lambda device: True,
    description="reference: materialised B×H×T×T scores, any device and dtype",
    materialises=True,
)
from mta_lab.attention import chunked as _chunked  # noqa: E402,F401  (registers "chunked")
from mta_lab.attention import flex as _flex  # noqa: E402,F401  (registers "flex")
from mta_lab.attention import stacked as _stacked  # noqa: E402,F401  (registers "stacked")

if importlib.util.find_spec("triton") is not None:  # CPU-only installs have no Triton
    from mta_lab.attention import triton_band as _triton_band  # noqa: E402,F401  (registers "triton")
    from mta_lab.attention import triton_conv as _triton_conv  # noqa: E402,F401  (registers "triton_conv")
    from mta_lab.attention import triton_mix as _triton_mix  # noqa: E402,F401  (registers "triton_mix")
