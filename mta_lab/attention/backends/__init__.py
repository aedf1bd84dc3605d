"""The registry of implementations of the MTA op: a leaf that imports no backend.

Each backend is a function with the signature of `reference.multi_token_attention`, computing the same function
(tested against the reference), in its own module named after it (`backends/<name>.py`), which calls `register`
when imported. The names are fixed (`spec.BACKEND_NAMES`); the modules are imported lazily, on the first
`resolve` or listing, from `MODULES`. A module whose dependency is missing (no Triton) is skipped and the reason
kept (`unavailable()`). `resolve("auto", ...)` asks the policy (`policy.py`: one ordered table) which of the
backends usable on the device to run; a pinned name is checked to be installed, to run on the device and to
implement the call, with one clear error otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mta_lab.attention.backends.policy import HINTS, OP_OPTIONS, RULES, Call, choose
from mta_lab.attention.spec import BACKEND_NAMES

OpFn = Callable[..., torch.Tensor]
ANY_DEVICE = ("any",)  # every torch device type (cpu, cuda, mps, meta, ...)
MODULES = {name: f"mta_lab.attention.backends.{name}" for name in BACKEND_NAMES}
# What a backend module needs beyond torch, for the message when its import fails.
NEEDS = {"triton": "Triton (pip install triton)", "triton_mix": "Triton (pip install triton)",
         "triton_flashmix": "Triton (pip install triton)",
         "triton_conv": "Triton (pip install triton)", "flex": "FlexAttention (torch >= 2.5)"}


def _any_call(options: dict) -> bool:
    return True


@dataclass(frozen=True)
class Backend:
    name: str
    fn: OpFn
    description: str  # how it computes the op
    calls: str = "every call"  # the calls it implements, in words (`implements` is the predicate)
    devices: tuple[str, ...] = ANY_DEVICE  # torch device types it runs on
    implements: Callable[[dict], bool] = _any_call  # op keyword arguments (kq_pre=..., ...) -> does it compute it?
    materialises: bool = False  # holds B×H×T×T maps (peak memory quadratic in T), if only within one call

    def runs_on(self, device: torch.device | str) -> bool:
        return self.devices == ANY_DEVICE or torch.device(device).type in self.devices


_REGISTRY: dict[str, Backend] = {}
_UNAVAILABLE: dict[str, str] = {}
_loaded = False


def register(backend: Backend) -> None:
    """Called by a backend module when it is imported; its name must be one of `BACKEND_NAMES`."""
    if backend.name not in MODULES:
        raise ValueError(f"attention backend {backend.name!r} is not one of {', '.join(BACKEND_NAMES)}; add it to "
                         "spec.BACKEND_NAMES")
    _REGISTRY[backend.name] = backend


# torch.compile runs this at trace time and keeps its result, so that a first call from a compiled layer loads the
# modules without a graph break (Dynamo cannot trace importlib).
@torch.compiler.assume_constant_result
def _load() -> bool:
    """Import every backend module once, in `BACKEND_NAMES` order; an ImportError marks that backend unavailable."""
    global _loaded
    if _loaded:
        return True
    for name, module in MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError as err:
            need = NEEDS.get(name)
            _UNAVAILABLE[name] = f"needs {need} ({err})" if need else f"cannot be imported ({err})"
            continue
        if name not in _REGISTRY:
            raise RuntimeError(f"{module} did not register attention backend {name!r}")
    _loaded = True
    return True


def backends() -> tuple[Backend, ...]:
    """The installed backends, in `BACKEND_NAMES` order."""
    _load()
    order = {name: i for i, name in enumerate(BACKEND_NAMES)}
    return tuple(sorted(_REGISTRY.values(), key=lambda b: order.get(b.name, len(order))))


def backend_names() -> tuple[str, ...]:
    """The installed backends' names."""
    return tuple(b.name for b in backends())


def unavailable() -> dict[str, str]:
    """{name: why it is not installed} for the backends whose module could not be imported here."""
    _load()
    return dict(_UNAVAILABLE)


def get(name: str) -> Backend:
    """The installed backend `name`; a clear error when it is unknown or unavailable."""
    _load()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _UNAVAILABLE:
        raise RuntimeError(f"attention backend {name!r} {_UNAVAILABLE[name]}; install it or use backend=auto")
    raise ValueError(f"attention backend {name!r} is unknown; the backends are: {', '.join(BACKEND_NAMES)}")


def usable(device: torch.device | str) -> tuple[str, ...]:
    """Names of the installed backends that run on `device`."""
    return tuple(b.name for b in backends() if b.runs_on(device))


def op_arguments(options: dict) -> dict:
    """`options` without the hints for "auto" (what the op itself is called with, plus pad_key)."""
    return {k: v for k, v in options.items() if k not in HINTS}


def resolve(name: str, device: torch.device | str, options: dict | None = None) -> Backend:
    """The backend for `name` ("auto" or one of BACKEND_NAMES) on `device` for a call with keyword arguments
    `options` (the op's, plus the hints of `policy.HINTS`; None: any call); a clear error if unusable."""
    device = torch.device(device)
    options = options or {}
    if name == "auto":
        return get(choose(options, usable(device)))
    backend = get(name)
    if not backend.runs_on(device):
        raise RuntimeError(f"attention backend {name!r} does not run on {device.type} (only on "
                           f"{', '.join(backend.devices)}); use backend=auto or one of: {', '.join(usable(device))}")
    if options and not backend.implements(op_arguments(options)):
        present = [k for k in OP_OPTIONS if options.get(k) is not None] + (["dropout"] if options.get("dropout_p")
                                                                            else [])
        raise RuntimeError(f"attention backend {name!r} does not implement this layer's options "
                           f"({', '.join(present) or 'none'}): it implements {backend.calls}; use backend=auto")
    return backend


def why_not(options: dict, device: torch.device | str) -> tuple[str, dict[str, str]]:
    """(the backend "auto" picks for this call on `device`, {every other backend: why it was not chosen})."""
    device = torch.device(device)
    chosen = choose(options, usable(device))
    call, reasons = Call.of(options), {}
    for name in BACKEND_NAMES:
        if name == chosen:
            continue
        rule = next((r for r in RULES if r.backend == name), None)
        if name in unavailable():
            reasons[name] = f"unavailable: {unavailable()[name]}"
        elif not get(name).runs_on(device):
            reasons[name] = f"does not run on {device.type}"
        elif not get(name).implements(op_arguments(options)):
            reasons[name] = "does not implement the call"
        elif rule is None:
            reasons[name] = "never chosen by auto (pin it: backend=" + name + ")"
        elif not rule.holds(call):
            reasons[name] = f"its rule does not hold ({rule.when})"
        else:
            reasons[name] = f"the policy prefers {chosen}"
    return chosen, reasons
