"""Launch options of "triton_flashmix" on the GPU (MTA_TRITON_FLASHMIX_BLOCKS): fwd and bwd ms per variant against
SDPA and "triton_mix", Talking heads op (head_pre H×H + head_post full), bf16, B 1, H 16, d 96, fresh random inputs.
Usage: python3 reports/device/flashmix_sweep.py T [JSON variant ...]; one line per variant, peak memory included."""

import json
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from mta_lab.attention.backends.triton_flashmix import flash_mix_attention
from mta_lab.attention.backends.triton_mix import head_mix_attention

t = int(sys.argv[1])
variants = [json.loads(a) for a in sys.argv[2:]] or [{}]
torch.manual_seed(0)
b, h, d = 1, 16, 96
q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
w1 = (torch.eye(h, device="cuda") + 0.3 * torch.randn(h, h, device="cuda")).requires_grad_()
w2 = (torch.eye(h, device="cuda") + 0.3 * torch.randn(h, h, device="cuda"))[None].requires_grad_()
grad = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16)


def timing(fn, leaves):
    def fwd():
        return fn()

    out = fn()
    fwd_ms = do_bench(fwd, warmup=25, rep=100, return_mode="median")
    both_ms = do_bench(lambda: torch.autograd.grad(fn(), leaves, grad), warmup=25, rep=100, return_mode="median")
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    torch.autograd.grad(fn(), leaves, grad)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return out, fwd_ms, both_ms, peak


sdpa = timing(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v))
ref = timing(lambda: head_mix_attention(q, k, v, w1, w2), (q, k, v, w1, w2))
print(f"T {t} sdpa fwd {sdpa[1]:.3f} fwd+bwd {sdpa[2]:.3f} ms peak {sdpa[3]:.3f} GiB")
print(f"T {t} triton_mix fwd {ref[1]:.3f} fwd+bwd {ref[2]:.3f} ms ({ref[2] / sdpa[2]:.2f}x) peak {ref[3]:.3f} GiB")
for variant in variants:
    os.environ["MTA_TRITON_FLASHMIX_BLOCKS"] = json.dumps(variant)
    try:
        out, fwd_ms, both_ms, peak = timing(lambda: flash_mix_attention(q, k, v, w1, w2), (q, k, v, w1, w2))
    except Exception as err:  # noqa: BLE001  (a variant that does not launch: say so, try the next)
        print(f"T {t} flashmix {json.dumps(variant)} failed: {type(err).__name__}: {str(err)[:200]}")
        continue
    err = ((out.float() - ref[0].float()).abs().max() / ref[0].float().abs().max()).item()
    print(f"T {t} flashmix {json.dumps(variant)} fwd {fwd_ms:.3f} fwd+bwd {both_ms:.3f} ms "
          f"({both_ms / sdpa[2]:.2f}x sdpa) peak {peak:.3f} GiB err vs triton_mix {err:.1e}", flush=True)

# Where the time goes: one fwd+bwd of the first variant under the profiler, CUDA time per kernel name.
os.environ["MTA_TRITON_FLASHMIX_BLOCKS"] = json.dumps(variants[0])
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    for _ in range(3):
        torch.autograd.grad(flash_mix_attention(q, k, v, w1, w2), (q, k, v, w1, w2), grad)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
