#!/bin/bash
# Device call of the third 2026-12-03 session. From the repository root, with .whl carried (haystack.txt: the first
# 3 MB of the embedded plays, and its packed-token cache made on the CPU machine, since the H200's python has no
# `datasets`; the mtime is restored so that the cache key, which hashes path, size and mtime, matches):
#   bash reports/device/2026-12-03-session3.sh
# 1. issue 17: the default NIAH and BabiLong suites at 4K (reports/device/2026-12-03-eval.py);
# 2. issue 16: `mta-lab bench decode`, graph mode, after score-mixing layers keep their cache in float32.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt"
touch -d @1796300982.619311722 .whl/haystack.txt
timeout 330 python3 reports/device/2026-12-03-eval.py "$OUT" 10 haystack="$PWD/.whl/haystack.txt" \
  cache_dir="$PWD/.whl/cache" > "$OUT/eval.out" 2>&1
echo "eval rc=$?"; cat "$OUT/eval.out" | tail -n 4
timeout 230 python3 -m mta_lab.cli bench decode model=880m attention=transformer,mta contexts=2048,8192 \
  batches=1,16 new_tokens=32 modes=graph out="$OUT" tag=decode-h200-880m-f32cache > "$OUT/bench-decode3.log" 2>&1
echo "bench rc=$?"
cat "$OUT/decode-h200-880m-f32cache.md" 2>/dev/null || tail -n 30 "$OUT/bench-decode3.log"
