"""Device call 2 of 2026-12-03 (issue 16, decoding): where the milliseconds of one decoding step go, and whether
compiling the step's elementwise parts (RMSNorm, SwiGLU, RoPE) under the CUDA graph reaches the Transformer's
3 ms/token goal. One H200, from the repository root:  python3 reports/device/2026-12-03-decode-step.py OUT_DIR

Part A: torch.profiler over 5 eager static-cache steps (880M, bf16, batch 1, 2048-token prompt): kernel count per
step, summed kernel time per step and the top kernels, for transformer and mta.
Part B: graph decoding (`bench_one` of `mta-lab bench decode`, fastest of 3) of transformer, mta and talking_heads
at batch 1, contexts 2048 and 8192, first as shipped, then with RMSNorm.forward, SwiGLU.forward and apply_rope
wrapped in torch.compile (dynamic=False) before the models are built."""

import json
import sys
import time
from pathlib import Path

import torch

from mta_lab.attention import layers
from mta_lab.bench.decode_bench import bench_one, build, markdown_table
from mta_lab.model import transformer

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
dev = torch.device("cuda")
log = open(out / "decode-step.log", "a")


def say(*parts):
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    log.write(line + "\n")
    log.flush()


def profile(name, context=2048, steps=5):
    model = build("880m", name, max_len=context + 64, device=dev).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, context), device=dev)
    with torch.no_grad():
        cache = model.new_cache(context + 64)
        logits = model(prompt, cache)
        nxt = logits[:, -1:].argmax(-1)
        for _ in range(2):
            nxt = model(nxt, cache)[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                nxt = model(nxt, cache)[:, -1:].argmax(-1)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    count = sum(e.count for e in events) / steps
    total_ms = sum(e.self_device_time_total for e in events) / steps / 1000
    say(f"## {name}: {count:.0f} kernels per step, {total_ms:.2f} ms summed kernel time per step")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:12]:
        say(f"  {e.self_device_time_total / steps / 1000:7.3f} ms  {e.count / steps:5.0f}x  {e.key[:110]}")
    del model, cache
    torch.cuda.empty_cache()
    return {"attention": name, "kernels_per_step": count, "kernel_ms_per_step": total_ms}


def bench(label):
    rows = []
    for name in ("transformer", "mta", "talking_heads"):
        model = build("880m", name, max_len=8192 + 64, device=dev)
        for context in (2048, 8192):
            t0 = time.perf_counter()
            r = bench_one(model, "880m", name, mode="graph", batch_size=1, context=context, new_tokens=32)
            say(f"{label} {name} 1x{context}: {r.ms_per_token} ms/token ({r.status}; {time.perf_counter() - t0:.0f} s)")
            rows.append(r)
        del model
        torch.cuda.empty_cache()
    say(markdown_table(rows))
    return [dict(r.__dict__, variant=label) for r in rows]


results = {"profile": [profile(n) for n in ("transformer", "mta")], "graph": bench("shipped")}
compiled = dict(dynamic=False)
transformer.RMSNorm.forward = torch.compile(transformer.RMSNorm.forward, **compiled)
transformer.SwiGLU.forward = torch.compile(transformer.SwiGLU.forward, **compiled)
layers.apply_rope = torch.compile(layers.apply_rope, **compiled)
results["graph"] += bench("compiled")
(out / "decode-step.json").write_text(json.dumps(results, indent=2))
