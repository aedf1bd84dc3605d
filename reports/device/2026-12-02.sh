#!/bin/bash
# The device session of 2026-12-02 on one H200 (torch 2.11, triton 3.6), after issue 13's restructure (backends
# package, policy table, one model forward), in one call from the repository root:
#   bash reports/device/2026-12-02.sh
# 1. the GPU tests: every fast backend against eager, forward and gradients, and the models under autocast
#    (pytest -m gpu); 2. `mta-lab attention backends` on CUDA (what auto picks and why); 3. `mta-lab bench train`
#    880M transformer vs mta (compiled, batch 2, context 2048): tokens/s, memory and the backends the layers ran.
# Results go to $OUT (the device tool brings them back) and are committed under reports/bench/.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv | tee "$OUT/gpu.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/attention tests/model --timeout 240 \
  > "$OUT/gpu-tests.log" 2>&1
echo "pytest rc=$?" >> "$OUT/gpu-tests.log"
tail -n 4 "$OUT/gpu-tests.log"
python3 -m mta_lab.cli attention backends > "$OUT/attention-backends.txt" 2>&1
cat "$OUT/attention-backends.txt"
timeout 220 python3 -m mta_lab.cli bench train model=880m attention=transformer,mta batch_size=2 seq_len=2048 \
  compile=true steps=20 warmup=5 out="$OUT" tag=train-h200-880m-restructure > "$OUT/bench-train.log" 2>&1
echo "bench rc=$?"
cat "$OUT/train-h200-880m-restructure.md" 2>/dev/null || tail -n 20 "$OUT/bench-train.log"
