#!/bin/bash
# Device calls of the flash-mixing session (issue 16 (A)), one H200, from the repository root:
#   bash reports/device/2026-12-02-kernel.sh
# 1. GPU tests of the head-mixing backends ("triton_flashmix" new, "triton_mix" old) against eager;
# 2. `mta-lab bench attention` talking_heads at T 2048, 4096 and 16384 (sdpa, eager, triton_mix, triton_flashmix);
# 3. launch-option sweep of triton_flashmix at T 4096 and a per-kernel profile (reports/device/flashmix_sweep.py).
# (Call 1 ran this with the first launch defaults: 16 warps in the backward too, no D_CHUNK; its fp32 d 96 case
# failed with OutOfResources, since fixed.)
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv | tee "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/attention/backends/test_triton_flashmix.py \
  tests/attention/backends/test_triton_mix.py --timeout 200 > "$OUT/gpu-tests.log" 2>&1
echo "pytest rc=$?" >> "$OUT/gpu-tests.log"
tail -n 6 "$OUT/gpu-tests.log"
timeout 150 python3 -m mta_lab.cli bench attention configs=talking_heads seq_lens=2048,4096,16384 \
  backends=sdpa,eager,triton_mix,triton_flashmix plot=false out="$OUT" tag=attention-h200-talking_heads-flashmix \
  > "$OUT/bench-attention.log" 2>&1
echo "bench attention rc=$?"
grep -E "^\| (2048|4096|16384)" "$OUT/attention-h200-talking_heads-flashmix.md" || tail -n 20 "$OUT/bench-attention.log"
timeout 240 python3 reports/device/flashmix_sweep.py 4096 '{}' '{"D_CHUNK": 32}' '{"D_CHUNK": 32, "BN": 32}' \
  '{"D_CHUNK": 32, "BN": 32, "num_warps": 8}' '{"D_CHUNK": 64, "BN": 32}' '{"BWD_WARPS": 4}' '{"BWD_WARPS": 16}' \
  '{"CHUNK_MB": 256}' '{"KB": 8, "CHUNK_MB": 256}' 2>&1 | tee "$OUT/flashmix-sweep.log"
