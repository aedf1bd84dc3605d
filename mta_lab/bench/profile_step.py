"""Where one training step of a model's time goes on a GPU: torch.profiler over a few steps of `mta-lab bench
train`'s loop (random tokens, AdamW, bf16 autocast), the kernels sorted by their own CUDA time.

    mta-lab bench profile [--model 880m] [--attention mta] [--batch 2] [--seq-len 2048] [--compile]

`--attention` takes a preset or PRESET@BACKEND, as `bench train` does.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mta_lab.bench.train_bench import attention_spec
from mta_lab.model.config import load_model_preset
from mta_lab.model.transformer import build_model
from mta_lab.train.config import OptimConfig
from mta_lab.train.optim import build_optimizer


def run(opts: argparse.Namespace) -> int:
    """The tool with the options `mta-lab bench` parsed (commands/bench.py defines them)."""
    config = load_model_preset(opts.model, max_seq_len=opts.seq_len)
    model = build_model(config, attention_spec(opts.attention)).cuda()
    if opts.compile:
        for block in model.layers:
            block.compile()
    optimizer = build_optimizer(model, OptimConfig(), fused=True)
    tokens = torch.randint(0, config.vocab_size, (opts.batch, opts.seq_len + 1), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(tokens[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(opts.steps):
            step()
        torch.cuda.synchronize()
    print(f"== {opts.model} {opts.attention} B {opts.batch} T {opts.seq_len} compile={opts.compile}, "
          f"{opts.steps} steps", flush=True)
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=opts.rows, max_name_column_width=70))
    return 0
