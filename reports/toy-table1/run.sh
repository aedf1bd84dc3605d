#!/bin/bash
# Paper Table 1 (toy task) through the platform's front door, as run on a 4xH200 machine (torch 2.11).
#   bash reports/toy-table1/run.sh train     # 36 trainings: 12 per GPU on GPUs 0-2 (GPU 3 stays free)
#   bash reports/toy-table1/run.sh report    # table, curves, kernel heatmaps, a 10k-sample eval, from MLflow
# DIR holds the Optuna journal, the MLflow SQLite database and the run directories (checkpoints, final/model.pt).
# The longer one-seed run (long/README.md):
#   SWEEP=sweeps/paper/toy_table1_h200_long.yaml EXP=paper_toy_table1_h200_long WORKERS=12 GPUS=1,2,3 \
#     DIR=/tmp/toy_long OUTDIR=reports/toy-table1/long AT_STEP=5999 bash reports/toy-table1/run.sh train|report
set -u
MTA=${MTA:-mta-lab}
SWEEP=${SWEEP:-sweeps/paper/toy_table1_h200.yaml}
DIR=${DIR:-/tmp/toy_table1}
OUTDIR=${OUTDIR:-reports/toy-table1}
URI=sqlite:///$DIR/mlflow.db
EXP=${EXP:-paper_toy_table1_h200}
AT_STEP=${AT_STEP:-2499}  # MLflow steps count from 0: validation after 2,500 optimizer steps is step 2499
case "${1:-}" in
  train)
    $MTA sweep run $SWEEP --dir $DIR --workers ${WORKERS:-36} --gpus ${GPUS:-0,1,2} ;;
  report)
    mkdir -p $OUTDIR
    $MTA sweep status $SWEEP --dir $DIR
    $MTA report toy --uri $URI --experiment $EXP --out $OUTDIR --name table --quiet
    $MTA report toy --uri $URI --experiment $EXP --out $OUTDIR --name at-step-$((AT_STEP + 1)) --at-step $AT_STEP --quiet
    # Kernel heatmaps and a 10k-sample eval of the N=8 All models: the first finished one (final/model.pt, weights
    # only), else the newest step checkpoint of a run the deadline stopped.
    for variant in n8_all_mta n8_all_transformer; do
      ckpt=$(ls -d $DIR/runs/*${variant}-s*/final/model.pt 2>/dev/null | head -1)
      [ -z "$ckpt" ] && ckpt=$(ls -t $DIR/runs/*${variant}-s*/checkpoints/step-*.ckpt 2>/dev/null | head -1)
      if [ -z "$ckpt" ]; then echo "no $variant model or checkpoint"; continue; fi
      echo "$variant: $ckpt"
      cp $ckpt $OUTDIR/$variant-$(basename $ckpt)
      $MTA eval toy ckpt=$ckpt samples=10000 data_seed=7 --json > $OUTDIR/eval-$variant-10k.json
      case $variant in *mta) $MTA report kernels --ckpt $ckpt --out $OUTDIR --name kernels-$variant --quiet ;; esac
    done ;;
  *) echo "usage: $0 train|report" >&2; exit 2 ;;
esac
