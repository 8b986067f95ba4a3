#!/usr/bin/env bash
# The GPU numbers of docs/performance.md, in one command on a GPU machine (from the repository root):
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default results/gpu_check
# 1. benchmarks/train_step.py at the CIFAR-10 paper config, reference settings (fp32) against the fastest ones
#    (bf16, channels-last, torch.compile), every method in one process;
# 2. a short paper-model training of every method through the real workflow steps (pdm-bench stage1 / train /
#    sample) with benchmarks/gpu_short.yaml (bf16 + channels-last), keeping each train.json (throughput, peak memory).
# PDM_PYTHON names the interpreter (default python3); DEVICE (default cuda), STEP_ARGS, SHORT_CONFIG, SKIP_BENCH=1 and
# SKIP_SHORT=1 trim it; BENCH_TIMEOUT / SHORT_TIMEOUT (seconds) bound the two parts for a quick try (a CPU smoke run of the script itself).
set -uo pipefail
OUT=${1:-${OUT:-results/gpu_check}}
PY=${PDM_PYTHON:-python3}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  lscpu | grep 'Model name'
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/env.txt"

[ "${SKIP_BENCH:-0}" = 1 ] || timeout "${BENCH_TIMEOUT:-0}" $PY benchmarks/train_step.py --config config/paper/cifar10.yaml --device ${DEVICE:-cuda} --settings reference fast \
  ${STEP_ARGS:---steps 20 --warmup 5} --json "$OUT/train_step.json" 2>&1 | tee "$OUT/train_step.log"

[ "${SKIP_SHORT:-0}" = 1 ] && exit 0
RUNS=$(mktemp -d)
C=${SHORT_CONFIG:-benchmarks/gpu_short.yaml}
DEADLINE=$((SECONDS + ${SHORT_TIMEOUT:-100000}))  # each command gets what is left of SHORT_TIMEOUT seconds
left() { echo $((DEADLINE - SECONDS > 1 ? DEADLINE - SECONDS : 1)); }
for method in ${SHORT_METHODS:-pdm spdm ddpm cddpm protodiffusion ldm rdm}; do
  [ $((DEADLINE - SECONDS)) -gt 5 ] || { echo "$method: skipped (SHORT_TIMEOUT reached)"; continue; }
  stage1=()
  if [ "$($PY -c "from pdm.methods.registry import get_method_class as g; print(int(g('$method').has_stage1))")" = 1 ]; then
    timeout "$(left)" $PY -m pdm.cli stage1 --config $C --method $method --seed 0 --out "$RUNS/stage1/$method" > "$RUNS/$method.stage1.log" 2>&1 \
      || { echo "$method: stage1 failed"; tail -5 "$RUNS/$method.stage1.log"; continue; }
    stage1=(--stage1-dir "$RUNS/stage1/$method")
  fi
  timeout "$(left)" $PY -m pdm.cli train --config $C --method $method --seed 0 --out "$RUNS/models/$method" "${stage1[@]}" \
    > "$RUNS/$method.train.log" 2>&1 || { echo "$method: train failed"; tail -5 "$RUNS/$method.train.log"; continue; }
  timeout "$(left)" $PY -m pdm.cli sample --config $C --method $method --seed 0 --model-dir "$RUNS/models/$method" \
    --out "$RUNS/samples/$method" > "$RUNS/$method.sample.log" 2>&1 || { echo "$method: sample failed"; tail -5 "$RUNS/$method.sample.log"; }
  $PY -c "import json,sys; r=json.load(open('$RUNS/models/$method/train.json')); print('$method', {k: r.get(k) for k in ('status', 'steps_done', 'train_seconds', 'train_images_per_second', 'flops_per_step', 'peak_memory_bytes', 'mixed_precision', 'channels_last', 'compile')})"
done 2>&1 | tee "$OUT/short_runs.log"
tar -czf "$OUT/short_runs.tgz" -C "$RUNS" --exclude='*.safetensors' --exclude='*.npy' --exclude='checkpoint*' .
