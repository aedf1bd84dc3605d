"""`init_from=<run dir | final/model.pt | checkpoints/*.ckpt>`: a new run whose weights come from a trained model.

The new run has its own optimizer, schedule, run directory and MLflow run (tagged `mta.init_from`,
`mta.init_parent_run_id`, `mta.init_parent_step`, `mta.init_kind`). Its config may differ from the parent's where that
is meaningful:

- context extension: `train.seq_len`, `model.max_seq_len`, `model.rope_theta` (RoPE tables are computed, not stored);
- retrofit: another attention spec. Every tensor present in both models is copied; the attention variant's own
  tensors (kq kernels, head mixing, group norm, gate, DIFF's lambdas) that only the new run has keep the spec's
  initialisation ("created"), those only the parent has are left behind ("dropped"). Any other difference (a
  different model size, a tensor of another shape, a tensor one side does not know) is one error naming it.

What the new model computes at step 0: identity kq kernels and head mixing with group norm and gate off equal the
parent exactly; group norm and gate do not, so a retrofit that creates them needs `init_retrofit=spec` (keep them)
or `init_retrofit=exact` (turn them off). Either way the run logs the parent's and the new model's validation loss
at step 0 (`init/parent_val_loss`, `init/val_loss`, and the perplexities).

Everything is checked (files read, shapes compared on a meta-device model) before any run directory or MLflow run
is created. A resumed run (resume=auto) takes its weights from its own checkpoint and reads no parent weights.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from torch import Tensor, nn

from mta_lab.attention.layers import assign_
from mta_lab.attention.spec import AttentionSpec
from mta_lab.errors import UserError
from mta_lab.model.config import ModelConfig

# Model fields that fix the tensors' shapes (the model size): they must equal the parent's.
SIZE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "hidden")
# A layer's attention-variant tensors (not the q/k/v/o projections): the only ones a retrofit may create or drop.
VARIANT_TENSOR = re.compile(r"^layers\.\d+\.attn\.(?!w[qkvo]\.)")
# Created tensors that change the parent's function at step 0 (whatever their initialisation).
NOT_IDENTITY = re.compile(r"\.attn\.(norm_weight|gate\.)")


class InitFromError(UserError, ValueError):
    """A bad `init_from`: the message names the file or tensor and the fix."""


@dataclass(frozen=True)
class InitSource:
    """A trained model read from disk: the file, its run (directory, MLflow run id), step, configs and weights."""

    path: Path
    run_dir: Path | None
    parent_run_id: str | None
    step: int | None
    model: ModelConfig
    attention: AttentionSpec
    data: dict
    state: dict[str, Tensor]


@dataclass(frozen=True)
class InitPlan:
    """What `init_from` does to the new run's model: the tensors copied, created and dropped, and the run's kind."""

    source: InitSource
    kind: str  # continue | context_extension | retrofit | retrofit+context_extension
    copied: tuple[str, ...]
    created: tuple[str, ...]
    dropped: tuple[str, ...]
    exact: bool  # the new model computes the parent's function at step 0

    def tags(self) -> dict[str, str]:
        src = self.source
        return {"mta.init_from": str(src.path), "mta.init_parent_run_id": src.parent_run_id or "unknown",
                "mta.init_parent_step": str(src.step if src.step is not None else "unknown"),
                "mta.init_kind": self.kind}

    def params(self) -> dict[str, object]:
        return {"init.copied": len(self.copied), "init.created": len(self.created), "init.dropped": len(self.dropped),
                "init.exact_at_step0": self.exact, "init.parent_attention": self.source.attention.kind}

    def summary(self) -> str:
        return (f"init_from {self.source.path} ({self.kind}): {len(self.copied)} tensors copied, "
                f"{len(self.created)} created, {len(self.dropped)} dropped")

    def load_into(self, model: nn.Module) -> None:
        """Copy the shared tensors into `model` (built and initialised; plain or FSDP-sharded DTensors)."""
        state = self.source.state
        targets = {_clean(k): v for k, v in model.state_dict(keep_vars=True).items()}
        with torch.no_grad():
            for key in self.copied:
                assign_(targets[key], state[key].to(dtype=targets[key].dtype))

    def parent_model(self, max_seq_len: int) -> nn.Module:
        """The parent, able to read `max_seq_len` tokens (a context extension's longer windows; RoPE as trained)."""
        from dataclasses import replace

        from mta_lab.model.transformer import build_model

        config = replace(self.source.model, max_seq_len=max(max_seq_len, self.source.model.max_seq_len))
        model = build_model(config, self.source.attention)
        model.load_state_dict(self.source.state)
        return model


def _clean(key: str) -> str:
    return key.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "").removeprefix("module.")


def resolve_path(init_from: str) -> Path:
    """The file to read: a run directory means its final/model.pt, else its newest checkpoint that loads."""
    from mta_lab.train.checkpoints import latest_good_checkpoint

    path = Path(init_from).expanduser()
    if path.is_dir():
        if (path / "final" / "model.pt").is_file():
            return (path / "final" / "model.pt").resolve()
        if (path / ".metadata").exists():
            raise InitFromError(f"init_from={init_from}: a sharded FSDP checkpoint directory cannot be read here; "
                                "use that run's final/model.pt")
        found = latest_good_checkpoint(path)
        if found is None:
            raise InitFromError(f"init_from={init_from}: the directory holds no final/model.pt and no checkpoint "
                                "that loads; give a finished run directory, its final/model.pt or a checkpoints/"
                                "*.ckpt file")
        if found.is_dir():
            raise InitFromError(f"init_from={init_from}: its newest checkpoint {found} is sharded (FSDP); use the "
                                "run's final/model.pt")
        return found.resolve()
    if not path.is_file():
        raise InitFromError(f"init_from={init_from}: no such file or directory; give a run directory, its "
                            "final/model.pt or a checkpoints/*.ckpt file")
    return path.resolve()


def read_source(init_from: str) -> InitSource:
    """The trained model at `init_from`, read with weights_only=True."""
    from mta_lab.eval.checkpoint import UnsafeCheckpoint, load_checkpoint_file
    from mta_lab.train.checkpoints import checkpoint_step

    path = resolve_path(init_from)
    try:
        raw = load_checkpoint_file(path, "cpu", label="init_from")
    except UnsafeCheckpoint:
        raise
    except Exception as err:  # noqa: BLE001 - unreadable, damaged or not a torch file
        raise InitFromError(f"init_from={path}: cannot be read as a checkpoint ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:300]})") from None
    if isinstance(raw, dict) and "mta_configs" in raw:  # a Lightning checkpoint of LanguageModelTask
        configs, step = raw["mta_configs"], raw.get("global_step")
        state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    elif isinstance(raw, dict) and {"model", "attention", "state_dict"} <= set(raw):  # final/model.pt
        configs, step, state = raw, raw.get("step"), raw["state_dict"]
    else:
        raise InitFromError(f"init_from={path}: not an mta-lab checkpoint (no model/attention configs inside); give "
                            "a run directory, its final/model.pt or a checkpoints/*.ckpt file")
    run_dir = path.parent.parent if path.parent.name in ("final", "checkpoints") else None
    id_file = run_dir / "mlflow_run_id" if run_dir is not None else None
    parent_run_id = id_file.read_text().strip() or None if id_file is not None and id_file.is_file() else None
    if step is None:
        step = checkpoint_step(path)
    return InitSource(path=path, run_dir=run_dir, parent_run_id=parent_run_id, step=step,
                      model=ModelConfig.from_dict(configs["model"]),
                      attention=AttentionSpec.from_dict(configs["attention"]), data=configs.get("data") or {},
                      state={_clean(k): v for k, v in state.items()})


def plan_init(source: InitSource, model: ModelConfig, attention: AttentionSpec, data: dict,
              init_retrofit: str | None) -> InitPlan:
    """Compare the parent with the new run's model (built on the meta device): one error naming the first problem."""
    from mta_lab.model.transformer import build_model

    where = f"init_from={source.path}"
    for name in SIZE_FIELDS:
        theirs, ours = getattr(source.model, name), getattr(model, name)
        if theirs != ours:
            shown = "model.ffn_hidden" if name == "hidden" else f"model.{name}"
            raise InitFromError(f"{where}: the parent is a different model size ({shown}: parent {theirs}, this run "
                                f"{ours}); init_from keeps the architecture: set {shown}={theirs} (or the parent's "
                                "model preset)")
    if source.data.get("tokenizer") and data.get("tokenizer") and source.data["tokenizer"] != data["tokenizer"]:
        raise InitFromError(f"{where}: the parent was trained with data.tokenizer={source.data['tokenizer']}, this "
                            f"run uses {data['tokenizer']}; the embeddings only mean something with the parent's "
                            f"tokenizer: set data.tokenizer={source.data['tokenizer']}")
    with torch.device("meta"):
        shapes = {_clean(k): tuple(v.shape) for k, v in build_model(model, attention).state_dict().items()}
    parent = {k: tuple(v.shape) for k, v in source.state.items()}
    copied, created, dropped = [], [], []
    for key, shape in shapes.items():
        if key not in parent:
            if not VARIANT_TENSOR.match(key):
                raise InitFromError(f"{where}: this run's tensor {key} {list(shape)} is not in the parent's weights "
                                    "(only attention-variant tensors may be new); is it an mta-lab model of the "
                                    "same architecture?")
            created.append(key)
        elif parent[key] != shape:
            raise InitFromError(f"{where}: tensor {key} has shape {list(parent[key])} in the parent and {list(shape)} "
                                "in this run; keep the parent's sizes for it (e.g. the same kq kernel size or head "
                                "group), or leave it out of the new spec")
        else:
            copied.append(key)
    for key in parent:
        if key not in shapes:
            if not VARIANT_TENSOR.match(key):
                raise InitFromError(f"{where}: the parent's tensor {key} {list(parent[key])} has no place in this "
                                    "model (only attention-variant tensors may be dropped); is the parent an mta-lab "
                                    "model of the same architecture?")
            dropped.append(key)
    changes_function = [k for k in created if NOT_IDENTITY.search(k)]
    if changes_function and init_retrofit is None:
        raise InitFromError(
            f"{where}: the new spec adds group norm / gate ({changes_function[0]} and {len(changes_function) - 1} "
            "more), which change what the parent computes at step 0; choose init_retrofit=spec (keep them; the step-0 "
            "losses before and after are logged) or init_retrofit=exact (turn them off: identity kernels and mixing "
            "then equal the parent)")
    retrofit = attention != source.attention
    extension = (model.max_seq_len, model.rope_theta) != (source.model.max_seq_len, source.model.rope_theta)
    kind = "+".join(k for k, on in (("retrofit", retrofit), ("context_extension", extension)) if on) or "continue"
    exact = (not dropped and not changes_function
             and all(attention.kernel_init == "identity" for k in created if k.endswith((".kq_pre", ".kq_post")))
             and model.rope_theta == source.model.rope_theta)
    return InitPlan(source=source, kind=kind, copied=tuple(copied), created=tuple(created), dropped=tuple(dropped),
                    exact=exact)


def prepare_init(run, resume_from: Path | None) -> tuple[InitPlan | None, dict[str, str]]:
    """(the plan, or None when there is nothing to load; the MLflow tags). A resumed run loads no parent weights
    (its checkpoint has them) but keeps the tags."""
    if run.init_from is None:
        return None, {}
    if resume_from is not None:
        return None, {"mta.init_from": str(Path(run.init_from).expanduser().resolve())}
    plan = plan_init(read_source(run.init_from), run.model, run.attention, run.data.to_dict(), run.init_retrofit)
    return plan, plan.tags()


# ---------------------------------------------------------------------------------------------- step 0
@torch.no_grad()
def validation_loss(model: nn.Module, loaders, trainer) -> tuple[float, float]:
    """(mean domain loss, mean domain perplexity) of `model` on the validation loaders, as the module computes them
    (token-weighted per domain, summed over ranks; the paper's Avg is the mean of the domain perplexities)."""
    from mta_lab.train.module import masked_cross_entropy

    losses = []
    for loader in loaders:
        acc = torch.zeros(2, dtype=torch.float64, device=trainer.strategy.root_device)
        for batch in loader:
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with trainer.precision_plugin.forward_context():
                logits = model(batch["tokens"][:, :-1])
            loss_sum, count = masked_cross_entropy(logits, batch["tokens"][:, 1:], batch["loss_mask"])
            acc += torch.stack((loss_sum.double(), count.double()))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(acc)
        if acc[1] > 0:
            losses.append((acc[0] / acc[1]).item())
    if not losses:
        return math.nan, math.nan
    return sum(losses) / len(losses), sum(math.exp(min(v, 50.0)) for v in losses) / len(losses)


class InitFromReport(L.Callback):
    """At step 0 of a run started with init_from: the copied/created/dropped counts as params, the parent's and the
    new model's validation loss and perplexity as metrics (step 0), and one line on stderr."""

    def __init__(self, plan: InitPlan, handle) -> None:
        self.plan, self.handle = plan, handle

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step > 0:  # resumed: reported when the run started
            return
        loaders = trainer.datamodule.val_dataloader()
        was_training = pl_module.model.training
        pl_module.model.eval()
        child = validation_loss(pl_module.model, loaders, trainer)
        pl_module.model.train(was_training)
        parent_model = self.plan.parent_model(pl_module.model_config.max_seq_len)
        parent_model = parent_model.to(trainer.strategy.root_device).eval()
        parent = validation_loss(parent_model, loaders, trainer)
        del parent_model
        if self.handle is None:
            return
        self.handle.log_params(self.plan.params())
        metrics = {"init/parent_val_loss": parent[0], "init/parent_val_ppl": parent[1], "init/val_loss": child[0],
                   "init/val_ppl": child[1]}
        import time

        self.handle.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, 0, int(time.time() * 1000))
        print(f"{self.plan.summary()}; step-0 validation loss: parent {parent[0]:.4f}, this model {child[0]:.4f}",
              file=sys.stderr, flush=True)
