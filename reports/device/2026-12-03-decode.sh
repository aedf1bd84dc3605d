#!/bin/bash
# Device call of 2026-12-03 (issue 16, decoding): CUDA-graph decoding over the static cache against eager decoding
# with the growing cache, on one H200, from the repository root:  bash reports/device/2026-12-03-decode.sh
# 1. the GPU tests of the model package (graph decoding equals eager decoding and recomputation, the models under
#    autocast); 2. `mta-lab bench decode` at the issue's settings: 880M Transformer, MTA (paper config) and Talking
#    heads, bf16, random weights, greedy, prompts of 2048 and 8192 tokens, batch 1 and 16, eager vs graph.
# Results go to $OUT and are committed under reports/bench/.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv | tee "$OUT/gpu.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model --timeout 120 -x \
  > "$OUT/gpu-tests-decode.log" 2>&1
echo "pytest rc=$?" >> "$OUT/gpu-tests-decode.log"
tail -n 4 "$OUT/gpu-tests-decode.log"
timeout ${BENCH_S:-380} python3 -m mta_lab.cli bench decode model=880m attention=transformer,mta,talking_heads \
  contexts=2048,8192 batches=1,16 new_tokens=32 modes=eager,graph out="$OUT" tag=decode-h200-880m \
  > "$OUT/bench-decode.log" 2>&1
echo "bench rc=$?"
cat "$OUT/decode-h200-880m.md" 2>/dev/null || tail -n 30 "$OUT/bench-decode.log"
