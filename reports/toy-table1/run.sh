#!/bin/bash
# Paper Table 1 (toy task) through the platform's front door, as run on a 4xH200 machine (torch 2.11).
#   bash reports/toy-table1/run.sh train     # 36 trainings: 12 per GPU on GPUs 0-2 (GPU 3 stays free)
#   bash reports/toy-table1/run.sh report    # table, curves, kernel heatmaps, a 10k-sample eval, from MLflow
# DIR holds the Optuna journal, the MLflow SQLite database and the run directories (checkpoints, final/model.pt).
set -u
MTA=${MTA:-mta-lab}
SWEEP=${SWEEP:-sweeps/paper/toy_table1_h200.yaml}
DIR=${DIR:-/tmp/toy_table1}
OUTDIR=${OUTDIR:-reports/toy-table1}
URI=sqlite:///$DIR/mlflow.db
EXP=${EXP:-paper_toy_table1_h200}
case "${1:-}" in
  train)
    $MTA sweep run $SWEEP --dir $DIR --workers 36 --gpus ${GPUS:-0,1,2} ;;
  report)
    $MTA sweep status $SWEEP --dir $DIR
    $MTA report toy --uri $URI --experiment $EXP --out $OUTDIR --name table --quiet
    $MTA report toy --uri $URI --experiment $EXP --out $OUTDIR --name at-step-2500 --at-step 2499 --quiet
    # Kernel heatmaps and a 10k-sample eval of the first finished N=8 All models (final/model.pt: weights only).
    for variant in n8_all_mta n8_all_transformer; do
      ckpt=$(ls -d $DIR/runs/*${variant}-s*/final/model.pt 2>/dev/null | head -1)
      if [ -z "$ckpt" ]; then echo "no finished $variant run"; continue; fi
      cp $ckpt $OUTDIR/$variant-model.pt
      $MTA eval toy ckpt=$ckpt samples=10000 data_seed=7 --json > $OUTDIR/eval-$variant-10k.json
      case $variant in *mta) $MTA report kernels --ckpt $ckpt --out $OUTDIR --name kernels-$variant --quiet ;; esac
    done ;;
  *) echo "usage: $0 train|report" >&2; exit 2 ;;
esac
