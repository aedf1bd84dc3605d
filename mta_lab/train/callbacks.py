"""Callbacks: throughput (tokens/s) and MFU; the attention backends the layers resolved."""

from __future__ import annotations

import time

import lightning as L
import torch

from mta_lab.attention.layers import resolved_backends

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for MFU when train.peak_flops is null.
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def detect_peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for fragment, peak in PEAK_BF16_FLOPS.items() if fragment in name), None)


class Throughput(L.Callback):
    """Logs tokens/s (all ranks together) and MFU over windows of `every` steps."""

    def __init__(self, *, tokens_per_step: int, train_flops_per_token: int, peak_flops: float | None,
                 world_size: int, every: int) -> None:
        self.tokens_per_step, self.flops_per_token = tokens_per_step, train_flops_per_token
        self.peak, self.world, self.every = peak_flops, world_size, every
        self._t0: float | None = None
        self._steps = 0
        self.last_tokens_per_s: float | None = None
        self.last_mfu: float | None = None

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None:  # the first step (warm-up, compilation) is not timed
            self._sync(pl_module)
            self._t0, self._steps = time.perf_counter(), 0
            return
        self._steps += 1
        if self._steps < self.every:
            return
        self._sync(pl_module)
        elapsed = time.perf_counter() - self._t0
        self.last_tokens_per_s = self._steps * self.tokens_per_step / elapsed
        pl_module.log("tokens_per_s", self.last_tokens_per_s, rank_zero_only=True)
        if self.peak:
            self.last_mfu = self.last_tokens_per_s * self.flops_per_token / (self.peak * self.world)
            pl_module.log("mfu", self.last_mfu, rank_zero_only=True)
        self._t0, self._steps = time.perf_counter(), 0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._t0 = None  # validation time is not training throughput

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._t0 = None


RESOLVED_BACKEND_PARAM = "attention.backend.resolved"


class ResolvedBackends(L.Callback):
    """Logs `RESOLVED_BACKEND_PARAM` once, after the first training step (when every layer has resolved its
    backend under the run's device, precision and compilation); a resumed run that has it already logs nothing."""

    def __init__(self, handle) -> None:
        self.handle = handle  # the rank-0 RunHandle, None on the other ranks
        self.done = handle is None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done:
            return
        self.done = True
        value = resolved_backends(pl_module)
        logged = self.handle.client.get_run(self.handle.run_id).data.params
        if value is not None and RESOLVED_BACKEND_PARAM not in logged:
            self.handle.log_params({RESOLVED_BACKEND_PARAM: value})
