#!/bin/bash
# Device call 3 of the flash-mixing session (issue 16 (A)), one H200, from the repository root:
#   bash reports/device/2026-12-02-kernel-train.sh
# `mta-lab bench train` 880M: Transformer, Talking heads with auto (triton_mix at this map size) and pinned to
# triton_flashmix (compiled, batch 2, context 2048); then context 16384, batch 1, eager (not compiled), 3 steps:
# Transformer against Talking heads on triton_flashmix (peak memory is the point there).
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
timeout 280 python3 -m mta_lab.cli bench train model=880m attention=transformer,talking_heads,talking_heads@triton_flashmix \
  batch_size=2 seq_len=2048 compile=true steps=20 warmup=5 out="$OUT" tag=train-h200-880m-flashmix \
  > "$OUT/bench-train.log" 2>&1
echo "bench rc=$?"
cat "$OUT/train-h200-880m-flashmix.md" 2>/dev/null || tail -n 20 "$OUT/bench-train.log"
timeout 170 python3 -m mta_lab.cli bench train model=880m attention=transformer,talking_heads@triton_flashmix \
  batch_size=1 seq_len=16384 compile=false steps=3 warmup=1 out="$OUT" tag=train-h200-880m-flashmix-16k \
  > "$OUT/bench-train-16k.log" 2>&1
echo "bench 16k rc=$?"
cat "$OUT/train-h200-880m-flashmix-16k.md" 2>/dev/null || tail -n 20 "$OUT/bench-train-16k.log"
