"""Parallel strategies from config, and the model preparation they need (sharding, checkpointing, compile).

- single device / DDP: Lightning's strategies (gloo on CPU, NCCL on GPU); multi-node through SLURM's env.
- fsdp: FSDP2 (`fully_shard` per transformer block, then the root) inside `configure_model`, through
  Lightning's ModelParallelStrategy (data-parallel mesh only); it runs on CPUs with gloo as well.
  The model is built on the meta device, sharded, then materialised and initialised shard by shard.
"""

from __future__ import annotations

import torch
from torch import nn

from mta_lab.train.config import ConfigError, TrainerConfig


def resolve_accelerator(config: TrainerConfig) -> str:
    if config.accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if config.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is visible; use trainer.accelerator=cpu or auto")
    return config.accelerator


def build_strategy(config: TrainerConfig, accelerator: str):
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    world = config.devices * config.num_nodes
    backend = "nccl" if accelerator == "gpu" else "gloo"
    strategy = config.strategy
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "single"
    if strategy == "single":
        return "auto"
    if strategy == "ddp":
        return DDPStrategy(process_group_backend=backend)
    return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1, process_group_backend=backend)


def prepare_model(model: nn.Module, *, device_mesh=None, activation_checkpointing: bool = False,
                  compile_model: bool = False) -> nn.Module:
    if activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(model.layers):
            model.layers[i] = checkpoint_wrapper(block)
    if compile_model:
        for block in model.layers:
            block.compile()
    if device_mesh is not None:
        shard_model(model, device_mesh)
    return model


def shard_model(model: nn.Module, device_mesh) -> None:
    """FSDP2: one shard group per transformer block, then the root (embeddings, final norm)."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh["data_parallel"] if "data_parallel" in (device_mesh.mesh_dim_names or ()) else device_mesh
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
