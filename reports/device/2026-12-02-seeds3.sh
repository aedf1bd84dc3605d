#!/bin/bash
# Issue 19 on one H200 (the 8-GPU kind was not lent): Table 1's N=8 All Transformer, seeds 1 and 2, 12,000 steps,
# through `mta-lab sweep run` (2 worker processes on GPU 0), MLflow SQLite + Optuna journal on the machine's disk,
# then `mta-lab report toy` from that database. One call, from the repository root, with the wheels the machine
# lacks (mlflow, optuna, hydra, datasets, ... for Python 3.12) carried in .whl312/:
#   bash reports/device/2026-12-02-seeds3.sh
set -u
export PYTHONUNBUFFERED=1 TERM=dumb NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH=/tmp/site:$PWD
MTA="python3 -m mta_lab.cli"
OUT=${OUT:-/tmp/out}
DIR=/tmp/seeds3
SWEEP=reports/toy-table1/seeds3/sweep.yaml
rm -rf "$DIR" /tmp/site; mkdir -p "$OUT/seeds3"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl312/*.whl 2>&1 | tail -2
python3 -c 'import mlflow, optuna, hydra, datasets, torch; print("imports ok", torch.cuda.get_device_name(0))'
date -u +%FT%TZ
timeout -s INT ${DEADLINE_S:-470} $MTA sweep run $SWEEP --dir $DIR --workers 2 --gpus 0 > "$OUT/seeds3/sweep-run.log" 2>&1
echo "sweep run rc=$?"; date -u +%FT%TZ
tail -n 5 "$OUT/seeds3/sweep-run.log"; tail -n 25 $DIR/logs/* 2>/dev/null | tail -n 60
$MTA sweep status $SWEEP --dir $DIR > "$OUT/seeds3/sweep-status.txt" 2>&1; cat "$OUT/seeds3/sweep-status.txt"
$MTA report toy --uri sqlite:///$DIR/mlflow.db --experiment paper_toy_table1_seeds3 --out "$OUT/seeds3" --name table \
  --quiet > "$OUT/seeds3/report.log" 2>&1; echo "report rc=$?"
cat "$OUT/seeds3/table/report.md" 2>/dev/null | head -40
for r in $DIR/runs/*/; do echo "$r"; ls "$r/final" 2>/dev/null; cat "$r/final/metrics.json" 2>/dev/null; done \
  > "$OUT/seeds3/runs.txt"
tail -n 30 $DIR/runs/*/worker*.log > "$OUT/seeds3/worker-logs-tail.txt" 2>/dev/null
tar -C "$OUT" -czf /tmp/seeds3.tgz seeds3 && rm -rf "${OUT:?}/seeds3" && mv /tmp/seeds3.tgz "$OUT/" && ls -la "$OUT"
