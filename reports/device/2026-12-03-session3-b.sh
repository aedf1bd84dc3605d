#!/bin/bash
# Second device call of the third 2026-12-03 session (issue 16): generate(prefill_chunk=N). From the repository root:
#   bash reports/device/2026-12-03-session3-b.sh
# 1. the GPU tests of tests/model/test_generate.py (graph decoding with and without a chunked prefill);
# 2. `mta-lab bench decode` at 16 x 8192, graph mode, prefill_chunk=1024 (MTA's whole prefill ran out of memory).
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_generate.py --timeout 100 \
  > "$OUT/gpu-tests-generate-chunk.log" 2>&1
echo "pytest rc=$?" >> "$OUT/gpu-tests-generate-chunk.log"; tail -n 3 "$OUT/gpu-tests-generate-chunk.log"
timeout 300 python3 -m mta_lab.cli bench decode model=880m attention=transformer,mta contexts=8192 batches=16 \
  new_tokens=32 modes=graph prefill_chunk=1024 out="$OUT" tag=decode-h200-880m-chunked > "$OUT/bench-decode4.log" 2>&1
echo "bench rc=$?"
cat "$OUT/decode-h200-880m-chunked.md" 2>/dev/null || tail -n 30 "$OUT/bench-decode4.log"
