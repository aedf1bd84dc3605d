#!/usr/bin/env bash
# FSDP2 (and DDP, for comparison) on the 2-GPU H200 machine through the real `mta-lab train` front door:
# Hydra config, Lightning ModelParallelStrategy + fully_shard per block, MLflow (sqlite), sharded checkpoints.
# Run from the repository root, with the wheels of the packages the machine lacks in .whl/ (see README).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TERM=dumb
ROOT=/tmp/runs
COMMON="model=300m data.cache_dir=/tmp/cache train.seq_len=2048 optim=paper optim.warmup_steps=20 optim.lr=6e-4
 train.val_every=30 train.val_batches=2 train.log_every=10 train.ckpt_every=30 root=$ROOT"
# Each run logs to $OUT/run<n>.log and is bounded in time, so a hang costs one run, not the session.
n=0
train() { n=$((n + 1)); local limit=$1; shift
  timeout "$limit" python3 -m mta_lab.cli train $COMMON "$@" --no-progress > "$OUT/run$n.log" 2>&1
  echo "exit $? (limit ${limit}s)"; pkill -f mta_lab.cli; sleep 2; grep -v -i "warn" "$OUT/run$n.log" | grep -v "^\[rank" | tail -14; }

echo "== FSDP2, 300m transformer, 2 x H200, batch 8 x 2048 per GPU, 60 steps (sharded checkpoints at 30, 60)"
train 150 name=fsdp_transformer trainer=fsdp train.batch_size=8 train.max_steps=60
echo "== FSDP2 resume: reload the sharded step-60 checkpoint, continue to 90"
train 110 name=fsdp_transformer trainer=fsdp train.batch_size=8 train.max_steps=90 resume=auto
echo "== DDP, same model and batch, 60 steps"
train 100 name=ddp_transformer trainer=ddp train.batch_size=8 train.max_steps=60

python3 - "$ROOT" "$OUT" <<'PY'
import json, sys
from mlflow.tracking import MlflowClient
root, out = sys.argv[1], sys.argv[2]
client = MlflowClient(f"sqlite:///{root}/mlflow.db")
exp = client.get_experiment_by_name("mta-lab")
summary = []
for run in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]):
    hist = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)]
            for k in ("train/loss", "val/loss", "tokens_per_s", "mfu")}
    summary.append({"name": run.info.run_name, "status": run.info.status, "params": run.data.params,
                    "final": {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}, "history": hist})
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
for s in summary:
    tl = s["history"]["train/loss"]
    tps = [v for _, v in s["history"]["tokens_per_s"]]
    print(s["name"], s["status"], "train/loss", [(st, round(v, 3)) for st, v in tl],
          "tokens/s median", sorted(tps)[len(tps) // 2] if tps else None)
PY
