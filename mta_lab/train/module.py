"""The LightningModule: token-weighted masked cross entropy, AdamW + schedule, per-domain validation.

It takes plain config dataclasses and builds the model in `configure_model` (so FSDP can build it on the
meta device and shard it per transformer block before materialising).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from mta_lab.attention.spec import AttentionSpec
from mta_lab.errors import TrainingDiverged
from mta_lab.model.config import ModelConfig
from mta_lab.model.transformer import build_model
from mta_lab.train.config import OptimConfig
from mta_lab.train.optim import build_optimizer, build_scheduler


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of token losses over the mask, and the number of masked tokens (float32)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    weights = mask.flatten().to(losses.dtype)
    return (losses * weights).sum(), weights.sum()


class LanguageModelTask(L.LightningModule):
    def __init__(
        self,
        model_config: ModelConfig,
        attention: AttentionSpec,
        optim: OptimConfig,
        *,
        total_steps: int,
        tokens_per_step: int,
        train_flops_per_token: int,
        val_domains: tuple[str, ...] = ("val",),
        toy_eval: bool = False,
        compile_model: bool = False,
        activation_checkpointing: bool = False,
        export_path: str | None = None,
        export_extra: dict | None = None,
        initialise=None,
    ) -> None:
        super().__init__()
        self.model_config, self.attention, self.optim_config = model_config, attention, optim
        self.total_steps, self.tokens_per_step = total_steps, tokens_per_step
        self.train_flops_per_token = train_flops_per_token
        self.val_domains, self.toy_eval = tuple(val_domains), toy_eval
        self.compile_model, self.activation_checkpointing = compile_model, activation_checkpointing
        self.export_path, self.export_extra = export_path, export_extra or {}
        self.initialise = initialise  # fn(model): weights of a trained model (init_from), after the model's init
        self.model = None
        self._materialise_pending = False
        self._val: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ model
    def configure_model(self) -> None:
        if self.model is not None:
            return
        from mta_lab.train.strategies import prepare_model

        mesh = self.device_mesh
        # Under FSDP the model is built on the meta device (no memory), sharded per block, then materialised by
        # Lightning shard by shard; `on_fit_start` initialises it (DTensor-aware init).
        if self.model_config.source == "hf":  # a local Llama checkpoint with MTA attached (mta_lab/hf)
            from mta_lab.hf.lm import HFLanguageModel

            # from_pretrained returns eval mode, which Lightning keeps for submodules: dropout would stay off.
            self.model = HFLanguageModel.load(self.model_config.path, self.attention).train()
            return
        with torch.device("meta") if mesh is not None else contextlib.nullcontext():
            model = build_model(self.model_config, self.attention)
        self._materialise_pending = mesh is not None
        if mesh is None and self.initialise is not None:
            self.initialise(model)
        self.model = prepare_model(
            model,
            device_mesh=mesh,
            activation_checkpointing=self.activation_checkpointing,
            compile_model=self.compile_model,
        )

    def on_fit_start(self) -> None:
        # Runs after the strategy materialised meta parameters and before a checkpoint is restored.
        if self._materialise_pending:
            self.model.init_weights()
            self._materialise_pending = False
            if self.initialise is not None:
                self.initialise(self.model)

    def on_train_end(self) -> None:
        """A plain `final/model.pt` (weights + configs) that `mta-lab eval` loads without Lightning."""
        from pathlib import Path

        trainer = self.trainer
        if self.export_path is None:
            return
        from mta_lab.train.atomic_io import atomic_torch_save

        state = self.full_state_dict()
        if trainer.is_global_zero:
            Path(self.export_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save({"model": self.model_config.to_dict(), "attention": self.attention.to_dict(),
                               "state_dict": state, "step": trainer.global_step, **self.export_extra,
                               **self._hf_extra()},
                              self.export_path)
            if self.model_config.source == "hf":  # final/hf: what `mta_lab.hf.load_model` (from_pretrained) reads
                self.model.save_pretrained(Path(self.export_path).parent / "hf")

    def _hf_extra(self) -> dict[str, str]:
        """model=hf: the transformers config beside the weights, so `mta-lab eval` / `generate` rebuild the model
        from the checkpoint alone (`mta_lab.hf.restore`)."""
        if self.model_config.source != "hf":
            return {}
        from mta_lab.hf.restore import PAYLOAD_KEY, hf_config_json

        return {PAYLOAD_KEY: hf_config_json(self.model)}

    def full_state_dict(self) -> dict[str, Tensor]:
        """The unsharded model weights on CPU (a collective under FSDP: every rank must call it)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if self.device_mesh is not None:
            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_model_state_dict(self.model, options=options)
        return {k.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", ""): v.detach().cpu()
                for k, v in self.model.state_dict().items()}

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _loss_terms(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        tokens, mask = batch["tokens"], batch["loss_mask"]
        logits = self.model(tokens[:, :-1])
        loss_sum, count = masked_cross_entropy(logits, tokens[:, 1:], mask)
        return loss_sum, count, logits

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss_sum, count, _ = self._loss_terms(batch)
        loss = loss_sum / count.clamp_min(1.0)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}")
        step = self.global_step + 1
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # mean over ranks
        self.log("lr", self.optimizers().param_groups[0]["lr"])
        self.log("tokens_seen", float(step * self.tokens_per_step))
        self.log("flops_seen", float(step * self.tokens_per_step * self.train_flops_per_token))
        return loss

    def configure_optimizers(self):
        # Not fused: Lightning's mixed-precision plugin clips gradients itself, which fused AdamW forbids.
        optimizer = build_optimizer(self.model, self.optim_config)
        scheduler = build_scheduler(optimizer, self.total_steps, self.optim_config)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.optim_config.grad_clip is not None:
            self.clip_gradients(optimizer, self.optim_config.grad_clip, gradient_clip_algorithm="norm")

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        # Per domain: [loss sum, target tokens, wrong samples, samples], reduced over ranks at the end.
        self._val = {d: torch.zeros(4, dtype=torch.float64, device=self.device) for d in self.val_domains}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        loss_sum, count, logits = self._loss_terms(batch)
        acc = self._val[self.val_domains[dataloader_idx]]
        acc[0] += loss_sum.double()
        acc[1] += count.double()
        if self.toy_eval:
            from mta_lab.eval.toy import toy_error_rate

            wrong, samples = toy_error_rate(logits, batch["tokens"][:, 1:], batch["loss_mask"])
            acc[2] += wrong
            acc[3] += samples

    def on_validation_epoch_end(self) -> None:
        losses, ppls = [], []
        for domain, acc in self._val.items():
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(acc)
            if acc[1] == 0:
                continue
            loss = (acc[0] / acc[1]).item()
            losses.append(loss)
            ppls.append(math.exp(min(loss, 50.0)))
            if len(self._val) > 1:
                self.log(f"val/{domain}/loss", loss, sync_dist=True)
                self.log(f"val/{domain}/ppl", ppls[-1], sync_dist=True)
            if self.toy_eval and acc[3] > 0:
                self.log("val/error_rate", (acc[2] / acc[3]).item(), sync_dist=True)
        # Values are already reduced over ranks (identical everywhere); sync_dist only keeps Lightning content.
        if losses:  # the paper's "Avg": the mean of the domain perplexities
            self.log("val/loss", sum(losses) / len(losses), prog_bar=True, sync_dist=True)
            self.log("val/ppl", sum(ppls) / len(ppls), sync_dist=True)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["mta_configs"] = {
            "model": self.model_config.to_dict(),
            "attention": self.attention.to_dict(),
            "optim": asdict(self.optim_config),
            **self.export_extra,
            **self._hf_extra(),
        }
        # RNG state, so a resumed run draws the same dropout masks as an uninterrupted one.
        checkpoint["mta_rng"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            checkpoint["mta_rng"]["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("mta_rng")
        if rng:
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available() and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
