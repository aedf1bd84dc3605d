#!/usr/bin/env bash
# The commands that made reports/evals/tiny-cpu/ and tiny-cpu-ablation/ (2-core CPU machine shared with other jobs,
# 2026-12-03): two tiny checkpoints of the same size (D 64, 4 layers, 4 heads, context 256 byte tokens; 80 steps of
# 8 x 128 tokens on the embedded Shakespeare corpus), Transformer vs MTA, each evaluated on NIAH and BabiLong at
# small settings into a new MLflow run linked to its training run (track=new), then the two reports.
set -euo pipefail
for a in transformer mta; do
  mta-lab train experiment=tiny attention=$a root=runs/evals train.batch_size=8 train.max_steps=80 train.val_every=40
done
for a in transformer mta; do
  mta-lab eval niah ckpt=runs/evals/tiny_$a contexts=160,240 needles=1,2 depths=0,0.5,1 samples=5 track=new
  mta-lab eval babilong ckpt=runs/evals/tiny_$a tasks=qa1,qa2,qa3,qa4,qa5 lengths=0,240 facts=4 samples=5 track=new
done
mta-lab report evals --root runs/evals --out reports/evals --name tiny-cpu
mta-lab report ablation --root runs/evals --metric final/val_loss --metrics eval/niah/acc,eval/babilong/acc \
  --baseline transformer --out reports/evals --name tiny-cpu-ablation
