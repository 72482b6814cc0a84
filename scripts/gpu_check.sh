#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (the `device` tool): the `gpu` tests, then the
# GPU benchmark, inside a time budget. It uses the machine's own torch and pytest from the
# repository (PYTHONPATH=.) and the embedded synthetic data, so webdataset, submitit, deepspeed
# and ffcv are not needed. If the machine lacks pytest, carry pure-Python wheels in .whl/
# (git-ignored):  python -m pip download --no-deps -d .whl pytest pluggy iniconfig packaging pytest-timeout
# On the device:  bash scripts/gpu_check.sh [BUDGET_S]   (default 520 s; every stage is
# bounded by what is left, so the whole ends inside the budget)
# Results: $OUT (or /tmp/gpu_check)/{gpu.txt,gpu_tests.log,bench_gpu*.log,gpu_step.md}.
set -uo pipefail
BUDGET=${1:-520}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! "$PY" -c "import pytest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --find-links .whl --target .whl/site pytest pytest-timeout
  export PYTHONPATH=$PYTHONPATH:$ROOT/.whl/site
fi
t0=$SECONDS
left() { echo $((BUDGET - (SECONDS - t0) - 15)); }
{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"; nproc; } >"$OUT/gpu.txt" 2>&1
# 1. correctness: one-GPU torchrun over NCCL (bf16, fp16) resumed; no host sync in a step
timeout $((BUDGET / 3)) "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
echo "[gpu_check] tests done at $((SECONDS - t0)) s"
# 2. speed: the issue-11 target cases first, eager vs the compiled modes side by side
l=$(left); timeout $((l / 3)) "$PY" bench/bench_gpu.py --case 32:64 --repeats 3 \
  --modes eager compile compile-default 2>&1 | tee "$OUT/bench_gpu1.log"
l=$(left); timeout "$l" "$PY" bench/bench_gpu.py --case 64:16 128:32 64:64 256:16 512:4 128:32:fp32 \
  --repeats 3 --modes eager compile --budget-s $((l - 100)) 2>&1 | tee "$OUT/bench_gpu2.log"
cp bench/results/gpu_step.md "$OUT/" 2>/dev/null || true
echo "[gpu_check] done in $((SECONDS - t0)) s: $OUT"
