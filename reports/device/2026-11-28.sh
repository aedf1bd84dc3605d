#!/bin/bash
# Historical command record, kept as it ran (reports/README.md): reports/bench/{tune_triton,conv_parts,profile_step}.py
# are now `mta-lab bench tune-triton`, `mta-lab bench conv-parts`, `mta-lab bench profile`.
# The device session of 2026-11-28 on one 4xH200 machine (torch 2.11, triton 3.6), in three calls:
#   bash reports/device/2026-11-28.sh one     # wheels; toy trainings on GPUs 1-3 in the background;
#                                             # GPU tests, Triton tile search, bench attention kq_pre on GPU 0
#   bash reports/device/2026-11-28.sh two     # bench attention toy and paper; bench train 880M on GPU 0
#   bash reports/device/2026-11-28.sh three   # wait for the toy deadline; toy report (as fixed after the run:
#                                             # its first archive, models inside, was too big to come back)
#   bash reports/device/2026-11-28.sh four    # (a fresh 1-GPU machine) the triton_conv backend: GPU tests,
#                                             # bench train 880M transformer vs mta, bench attention paper/kq_pre
# Results go to $OUT (the device tool brings them back) and are committed under reports/.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH=/tmp/site:$PWD
MTA="python3 -m mta_lab.cli"
OUT=${OUT:-/tmp/out}
TOY="SWEEP=sweeps/paper/toy_table1_h200_long.yaml EXP=paper_toy_table1_h200_long WORKERS=12 GPUS=1,2,3"
TOY="$TOY DIR=/tmp/toy_long OUTDIR=$OUT/toy-long AT_STEP=${AT_STEP:-5999}"
TOY_DEADLINE_S=${TOY_DEADLINE_S:-1100}
BLOCKS=/tmp/triton-best.json
mkdir -p $OUT/bench

pack() {  # everything under $OUT as one archive (the device tool brings back only a few files)
  tar -C $OUT -czf /tmp/pack.tgz . && rm -rf "${OUT:?}"/* && mv /tmp/pack.tgz $OUT/results.tgz && ls -la $OUT
}

case "${1:-}" in
  one)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl 2>&1 | tail -2
    nvidia-smi --query-gpu=name,memory.used --format=csv
    date +%s > /tmp/toy-start
    setsid nohup bash -c "env $TOY MTA='$MTA' timeout -s INT $TOY_DEADLINE_S bash reports/toy-table1/run.sh train" \
      > /tmp/toy-train.log 2>&1 < /dev/null &
    export CUDA_VISIBLE_DEVICES=0
    timeout 200 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py -k "gpu or registry" \
      --timeout 150 > $OUT/pytest-gpu.log 2>&1; echo "pytest rc=$?"; tail -3 $OUT/pytest-gpu.log
    timeout 150 python3 reports/bench/tune_triton.py --shapes "kq_pre 6x11" --seq-lens 4096 --budget-s 100 \
      --out $OUT/bench/triton-tune-h200.json --best-out $BLOCKS > $OUT/tune.log 2>&1; echo "tune rc=$?"
    grep -E "^(==|BEST)" $OUT/tune.log
    [ -s $BLOCKS ] && export MTA_TRITON_BLOCKS=$(cat $BLOCKS) && echo "MTA_TRITON_BLOCKS=$MTA_TRITON_BLOCKS"
    timeout 200 $MTA bench attention configs=kq_pre tag=attention-h200-kq_pre out=$OUT/bench \
      > $OUT/bench-kq_pre.log 2>&1; echo "bench kq_pre rc=$?"; tail -30 $OUT/bench-kq_pre.log
    tail -3 /tmp/toy-train.log
    pack ;;
  two)
    export CUDA_VISIBLE_DEVICES=0
    [ -s $BLOCKS ] && export MTA_TRITON_BLOCKS=$(cat $BLOCKS)
    timeout 100 $MTA bench attention configs=toy tag=attention-h200-toy out=$OUT/bench \
      > $OUT/bench-toy.log 2>&1; echo "bench toy rc=$?"; tail -14 $OUT/bench-toy.log
    timeout 150 $MTA bench attention configs=paper seq_lens=1024,2048,4096,8192,16384 tag=attention-h200-paper \
      out=$OUT/bench > $OUT/bench-paper.log 2>&1; echo "bench paper rc=$?"; tail -14 $OUT/bench-paper.log
    timeout 300 $MTA bench train model=880m attention=transformer,t5_kq_6x11@triton,t5_kq_6x11,mta batch_size=2 seq_len=2048 \
      steps=15 warmup=4 compile=true tag=train-h200-880m-fast out=$OUT/bench > $OUT/bench-train.log 2>&1
    echo "bench train rc=$?"; tail -12 $OUT/bench-train.log
    tail -3 /tmp/toy-train.log
    pack ;;
  three)
    while pgrep -f "sweep run" > /dev/null && [ $(( $(date +%s) - $(cat /tmp/toy-start) )) -lt $((TOY_DEADLINE_S + 60)) ]; do
      sleep 5
    done
    cp /tmp/toy-train.log $OUT/toy-long-sweep-run.log
    env $TOY MTA="$MTA" bash reports/toy-table1/run.sh report > $OUT/toy-long-report.log 2>&1
    echo "report rc=$?"; tail -20 $OUT/toy-long-report.log
    cp /tmp/toy_long/optuna.journal $OUT/toy-long/ 2>/dev/null
    tail -q -n 3 /tmp/toy_long/logs/* 2>/dev/null > $OUT/toy-long/worker-logs-tail.txt
    # The archive must stay small enough to come back (27 MB did not): the models and the db travel beside it.
    mv $OUT/toy-long/*-model.pt $OUT/ 2>/dev/null
    gzip -c /tmp/toy_long/mlflow.db > $OUT/mlflow.db.gz
    tar -C $OUT -czf /tmp/pack.tgz --exclude='*.pt' --exclude='*.gz' . && mkdir -p /tmp/keep \
      && mv $OUT/*.pt $OUT/mlflow.db.gz /tmp/keep/ && rm -rf "${OUT:?}"/* && mv /tmp/pack.tgz $OUT/results.tgz \
      && mv /tmp/keep/* $OUT/ && ls -la $OUT ;;
  four)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl 2>&1 | tail -2
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py \
      -k "triton_conv or registry or model_on_gpu" --timeout 60 > $OUT/pytest-gpu-triton-conv.log 2>&1
    echo "pytest rc=$?"; tail -3 $OUT/pytest-gpu-triton-conv.log
    timeout 170 $MTA bench train model=880m attention=transformer,mta batch_size=2 seq_len=2048 steps=10 warmup=3 \
      compile=true tag=train-h200-880m-triton-conv out=$OUT/bench > $OUT/bench-train.log 2>&1
    echo "bench train rc=$?"; tail -8 $OUT/bench-train.log
    timeout 50 $MTA bench attention configs=paper seq_lens=1024,2048,4096 backends=sdpa,eager,triton_conv iters=3 \
      warmup=1 tag=attention-h200-paper-triton-conv out=$OUT/bench > $OUT/bench-paper.log 2>&1
    echo "bench paper rc=$?"; grep -A3 "^- goal" $OUT/bench/attention-h200-paper-triton-conv.md
    timeout 40 $MTA bench attention configs=kq_pre seq_lens=2048,4096 backends=sdpa,stacked,triton,triton_conv \
      iters=5 tag=attention-h200-kq_pre-triton-conv out=$OUT/bench > $OUT/bench-kq.log 2>&1
    echo "bench kq rc=$?"
    pack ;;
  *) echo "usage: $0 one|two|three|four" >&2; exit 2 ;;
esac
