#!/bin/bash
# Historical command record, kept as it ran (reports/README.md): reports/bench/{tune_triton,conv_parts,profile_step}.py
# are now `mta-lab bench tune-triton`, `mta-lab bench conv-parts`, `mta-lab bench profile`.
# The second device session of 2026-11-28: one call on a 4xH200 machine (torch 2.11, triton 3.6), four GPUs at once:
#   bash reports/device/2026-11-28-b.sh one   # (its triton_mix runs failed to compile: a non-constexpr global)
#   bash reports/device/2026-11-28-b.sh two   # the same with the fix: GPU tests of the mixing backends only,
#                                             # talking_heads op bench sdpa/eager/triton_mix, conv_parts on GPU 1
#   bash reports/device/2026-11-28-b.sh three # triton_mix with 64-bit offsets and tuned tiles, triton_conv = stacked S'
#                                             # + cuDNN conv fwd/dgrad + Triton wgrad: GPU tests and paper op bench
#                                             # (GPU 0), talking_heads op bench (GPU 1), 880M mta (GPU 2), 880M
#                                             # talking_heads and diff (GPU 3)
#   bash reports/device/2026-11-28-b.sh four  # triton_conv under autocast fixed: GPU tests (GPU 0), 880M mta (GPU 2),
#                                             # profiles of one 880M mta step, auto and eager (GPUs 1, 3)
#   bash reports/device/2026-11-28-b.sh five  # triton_conv's forward / input grad as tensor-core Toeplitz products:
#                                             # GPU tests + conv_parts (GPU 0), paper op bench (GPU 1), 880M mta
#                                             # (GPU 2), profile of one 880M mta step (GPU 3)
#   bash reports/device/2026-11-28-b.sh six   # (2xH200) the kernel gradient on tensor cores too: 880M mta alone on
#                                             # GPU 0, then GPU tests (GPU 0) beside conv_parts + paper op bench (GPU 1)
#   GPU 0: GPU tests (flex/stacked/triton/triton_conv/triton_mix against eager, registry, models), then the
#          triton_mix launch options at T 4096 (MTA_TRITON_MIX_BLOCKS)
#   GPU 1: bench attention talking_heads (1K-16K), then paper (1K-8K; sdpa, eager, stacked)
#   GPU 2: bench train 880M transformer, talking_heads (auto: triton_mix), talking_heads@eager
#   GPU 3: bench train 880M transformer, mta (auto: triton_mix + stacked), mta@eager
# Results go to $OUT (the device tool brings them back) and are committed under reports/.
set -u
export PYTHONUNBUFFERED=1 TERM=dumb NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH=/tmp/site:$PWD
MTA="python3 -m mta_lab.cli"
OUT=${OUT:-/tmp/out}
mkdir -p $OUT/bench $OUT/logs

finish() {  # the last lines of every log, then one archive
  tail -n 4 $OUT/logs/*.log
  pack
}

install() {  # the carried wheels (optuna, mlflow, hydra, ...) beside the machine's own torch
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl 2>&1 | tail -2
}

pack() {  # everything under $OUT as one archive (the device tool brings back only a few files)
  tar -C $OUT -czf /tmp/pack.tgz . && rm -rf "${OUT:?}"/* && mv /tmp/pack.tgz $OUT/results.tgz && ls -la $OUT
}

gpu0() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 280 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py -k "gpu or registry" \
    --timeout 200 > $OUT/logs/pytest-gpu.log 2>&1; echo "pytest rc=$?" >> $OUT/logs/pytest-gpu.log
  for blocks in '{"BLOCK_N": 64}' '{"BLOCK_N": 128}' '{"BLOCK_N": 256}' '{"BLOCK_N": 128, "num_warps": 8}' \
                '{"BLOCK_N": 256, "num_warps": 8}' '{"BLOCK_N": 128, "num_warps": 2}'; do
    echo "== MTA_TRITON_MIX_BLOCKS=$blocks" >> $OUT/logs/mix-tune.log
    MTA_TRITON_MIX_BLOCKS="$blocks" timeout 60 $MTA bench attention configs=talking_heads seq_lens=4096 \
      backends=sdpa,triton_mix iters=5 plot=false out=/tmp/tune tag=tune >> $OUT/logs/mix-tune.log 2>&1
    grep -E "^\| 4096 \| triton_mix" /tmp/tune/tune.md >> $OUT/logs/mix-tune.log
  done
}

gpu1() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 300 $MTA bench attention configs=talking_heads seq_lens=1024,2048,4096,8192,16384 \
    tag=attention-h200-talking_heads out=$OUT/bench > $OUT/logs/bench-talking_heads.log 2>&1
  echo "rc=$?" >> $OUT/logs/bench-talking_heads.log
  timeout 230 $MTA bench attention configs=paper seq_lens=1024,2048,4096,8192 backends=sdpa,eager,stacked \
    tag=attention-h200-paper-stacked out=$OUT/bench > $OUT/logs/bench-paper.log 2>&1
  echo "rc=$?" >> $OUT/logs/bench-paper.log
}

train() {  # GPU, tag, attention list
  CUDA_VISIBLE_DEVICES=$1 timeout 520 $MTA bench train model=880m attention=$3 batch_size=2 seq_len=2048 steps=15 \
    warmup=4 compile=true tag=$2 out=$OUT/bench > $OUT/logs/$2.log 2>&1
  echo "rc=$?" >> $OUT/logs/$2.log
}

gpu0_two() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 250 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py \
    -k "mixing or talking or registry" --timeout 200 > $OUT/logs/pytest-gpu-mix.log 2>&1
  echo "pytest rc=$?" >> $OUT/logs/pytest-gpu-mix.log
  tune
}

tune() {
  for blocks in '{"BLOCK_N": 64}' '{"BLOCK_N": 128}' '{"BLOCK_N": 256}' '{"BLOCK_N": 128, "num_warps": 8}' \
                '{"BLOCK_N": 256, "num_warps": 8}' '{"BLOCK_N": 64, "num_warps": 2}'; do
    echo "== MTA_TRITON_MIX_BLOCKS=$blocks" >> $OUT/logs/mix-tune.log
    MTA_TRITON_MIX_BLOCKS="$blocks" timeout 60 $MTA bench attention configs=talking_heads seq_lens=4096 \
      backends=sdpa,triton_mix iters=5 plot=false out=/tmp/tune tag=tune > /tmp/tune.log 2>&1
    grep -E "^\| 4096 \| " /tmp/tune/tune.md >> $OUT/logs/mix-tune.log || tail -5 /tmp/tune.log >> $OUT/logs/mix-tune.log
  done
}

gpu1_two() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 200 $MTA bench attention configs=talking_heads seq_lens=1024,2048,4096,8192,16384 \
    backends=sdpa,eager,triton_mix tag=attention-h200-talking_heads-mix out=$OUT/bench \
    > $OUT/logs/bench-talking_heads-mix.log 2>&1
  echo "rc=$?" >> $OUT/logs/bench-talking_heads-mix.log
  timeout 200 python3 reports/bench/conv_parts.py > $OUT/logs/conv-parts.log 2>&1
  echo "rc=$?" >> $OUT/logs/conv-parts.log
}

gpu0_three() {
  export CUDA_VISIBLE_DEVICES=0
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py \
    -k "mixing or talking or registry" --timeout 150 > $OUT/logs/pytest-gpu-mix.log 2>&1
  echo "pytest rc=$?" >> $OUT/logs/pytest-gpu-mix.log
  timeout 250 $MTA bench attention configs=paper seq_lens=1024,2048,4096,8192 backends=sdpa,eager,stacked,triton_conv \
    tag=attention-h200-paper out=$OUT/bench > $OUT/logs/bench-paper.log 2>&1
  echo "rc=$?" >> $OUT/logs/bench-paper.log
}

gpu1_three() {
  export CUDA_VISIBLE_DEVICES=1
  timeout 400 $MTA bench attention configs=talking_heads seq_lens=1024,2048,4096,8192,16384 \
    tag=attention-h200-talking_heads out=$OUT/bench > $OUT/logs/bench-talking_heads.log 2>&1
  echo "rc=$?" >> $OUT/logs/bench-talking_heads.log
}

profile() {  # GPU, attention label, log name
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 reports/bench/profile_step.py --attention $2 > $OUT/logs/$3.log 2>&1
  echo "rc=$?" >> $OUT/logs/$3.log
}

case "${1:-}" in
  one)
    install
    nvidia-smi --query-gpu=name,memory.used --format=csv
    gpu0 & gpu1 &
    train 2 train-h200-880m-talking-heads transformer,talking_heads,talking_heads@eager &
    train 3 train-h200-880m-mta transformer,mta,mta@eager &
    wait
    finish ;;
  two)
    install
    gpu0_two & gpu1_two &
    train 2 train-h200-880m-talking-heads transformer,talking_heads,talking_heads@eager &
    train 3 train-h200-880m-mta transformer,mta,mta@eager &
    wait
    finish ;;
  three)
    install
    gpu0_three & gpu1_three &
    train 2 train-h200-880m-mta transformer,mta,mta@eager &
    train 3 train-h200-880m-talking-heads transformer,talking_heads,diff &
    wait
    finish ;;
  four)
    install
    (export CUDA_VISIBLE_DEVICES=0; timeout 150 python3 -m pytest -q -p no:cacheprovider \
      tests/unit/test_flex_backend.py -k "mixing or talking or autocast or registry or model_on_gpu" --timeout 120 \
      > $OUT/logs/pytest-gpu.log 2>&1; echo "pytest rc=$?" >> $OUT/logs/pytest-gpu.log
      timeout 300 python3 -m pytest -q -p no:cacheprovider tests/unit/test_flex_backend.py -k "backend_on_gpu" \
      --timeout 250 > $OUT/logs/pytest-gpu-kq.log 2>&1; echo "pytest rc=$?" >> $OUT/logs/pytest-gpu-kq.log) &
    profile 1 mta profile-880m-mta &
    profile 3 mta@eager profile-880m-mta-eager &
    train 2 train-h200-880m-mta transformer,mta,mta@eager &
    wait
    finish ;;
  five)
    install
    (export CUDA_VISIBLE_DEVICES=0; timeout 150 python3 -m pytest -q -p no:cacheprovider \
      tests/unit/test_flex_backend.py -k "mixing or talking or autocast or registry or model_on_gpu" --timeout 120 \
      > $OUT/logs/pytest-gpu.log 2>&1; echo "pytest rc=$?" >> $OUT/logs/pytest-gpu.log
      timeout 120 python3 reports/bench/conv_parts.py > $OUT/logs/conv-parts.log 2>&1
      echo "rc=$?" >> $OUT/logs/conv-parts.log
      for blocks in '{"BLOCK_I": 128, "BLOCK_J": 32, "num_warps": 8}' '{"BLOCK_I": 64, "BLOCK_J": 64}' \
                    '{"BLOCK_I": 128, "BLOCK_J": 64, "num_warps": 8}' '{"BLOCK_I": 32, "BLOCK_J": 32}'; do
        echo "== MTA_TRITON_CONV_BLOCKS=$blocks" >> $OUT/logs/conv-tune.log
        MTA_TRITON_CONV_BLOCKS="$blocks" timeout 60 python3 reports/bench/conv_parts.py --seq-lens 4096 \
          2>&1 | grep -E "triton (forward|input)|err" >> $OUT/logs/conv-tune.log
      done) &
    (export CUDA_VISIBLE_DEVICES=1; timeout 250 $MTA bench attention configs=paper seq_lens=1024,2048,4096,8192 \
      backends=sdpa,eager,triton_conv tag=attention-h200-paper-tc out=$OUT/bench > $OUT/logs/bench-paper.log 2>&1
      echo "rc=$?" >> $OUT/logs/bench-paper.log) &
    train 2 train-h200-880m-mta transformer,mta &
    profile 3 mta profile-880m-mta &
    wait
    finish ;;
  six)
    install
    CUDA_VISIBLE_DEVICES=0 timeout 130 $MTA bench train model=880m attention=transformer,mta batch_size=2 \
      seq_len=2048 steps=15 warmup=4 compile=true tag=train-h200-880m-mta out=$OUT/bench \
      > $OUT/logs/train-h200-880m-mta.log 2>&1; echo "rc=$?" >> $OUT/logs/train-h200-880m-mta.log
    (export CUDA_VISIBLE_DEVICES=0; timeout 100 python3 -m pytest -q -p no:cacheprovider \
      tests/unit/test_flex_backend.py -k "mixing or talking or autocast or registry or model_on_gpu" --timeout 90 \
      > $OUT/logs/pytest-gpu.log 2>&1; echo "pytest rc=$?" >> $OUT/logs/pytest-gpu.log) &
    (export CUDA_VISIBLE_DEVICES=1; timeout 40 python3 reports/bench/conv_parts.py > $OUT/logs/conv-parts.log 2>&1
      echo "rc=$?" >> $OUT/logs/conv-parts.log
      timeout 80 $MTA bench attention configs=paper seq_lens=1024,2048,4096,8192 backends=sdpa,eager,triton_conv \
      tag=attention-h200-paper-tc out=$OUT/bench > $OUT/logs/bench-paper.log 2>&1
      echo "rc=$?" >> $OUT/logs/bench-paper.log) &
    wait
    finish ;;
esac
