#!/bin/bash
# Device call 2 of 2026-12-03 (issue 16, decoding), after softmax_rows moved to scaled_dot_product_attention with
# the visibility mask (no float32 copy of the cache per step). From the repository root:
#   bash reports/device/2026-12-03-decode2.sh
# 1. GPU tests of tests/model and tests/attention/test_decoding.py; 2. `mta-lab bench decode` at the issue's
# settings (as in 2026-12-03-decode.sh); 3. reports/device/2026-12-03-decode-step.py (kernel profile of one step,
# the compiled elementwise parts under the graph). Results go to $OUT and are committed under reports/bench/.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model tests/attention/test_decoding.py \
  --timeout 100 -x > "$OUT/gpu-tests-decode2.log" 2>&1
echo "pytest rc=$?" >> "$OUT/gpu-tests-decode2.log"
tail -n 3 "$OUT/gpu-tests-decode2.log"
timeout 230 python3 -m mta_lab.cli bench decode model=880m attention=transformer,mta,talking_heads \
  contexts=2048,8192 batches=1,16 new_tokens=32 modes=eager,graph out="$OUT" tag=decode-h200-880m-sdpa \
  > "$OUT/bench-decode2.log" 2>&1
echo "bench rc=$?"
cat "$OUT/decode-h200-880m-sdpa.md" 2>/dev/null || tail -n 30 "$OUT/bench-decode2.log"
timeout 220 python3 reports/device/2026-12-03-decode-step.py "$OUT" > "$OUT/decode-step.out" 2>&1
echo "decode-step rc=$?"
tail -n 60 "$OUT/decode-step.out"
