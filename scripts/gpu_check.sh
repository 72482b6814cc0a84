#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (the `device` tool): the `gpu` tests, then the
# GPU benchmark, inside a time budget. It uses the machine's own torch from the repository
# (PYTHONPATH=.) and the embedded synthetic data, so webdataset, submitit, deepspeed and
# ffcv are not needed. pytest is taken from .whl/ when the machine lacks it; prepare that
# folder here first (pure-Python wheels; .whl/ is git-ignored, so carry it):
#   python -m pip download --no-deps -d .whl pytest pluggy iniconfig packaging pytest-timeout
# Then, on the device:  bash scripts/gpu_check.sh [BUDGET_S]   (default 480 s)
# Results: $OUT (or /tmp/gpu_check)/{gpu.txt,gpu_tests.log,bench_gpu.log,gpu_step.md}.
set -uo pipefail
BUDGET=${1:-480}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import pytest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --find-links .whl --target .whl/site pytest pytest-timeout
  export PYTHONPATH=$PYTHONPATH:$ROOT/.whl/site
fi
{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())"; } >"$OUT/gpu.txt" 2>&1
t0=$SECONDS
timeout $((BUDGET / 3)) "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
left=$((BUDGET - (SECONDS - t0) - 20))
timeout "$left" "$PY" bench/bench_gpu.py --budget-s $((left * 2 / 3)) 2>&1 | tee "$OUT/bench_gpu.log"
cp bench/results/gpu_step.md "$OUT/" 2>/dev/null || true
echo "[gpu_check] done in $((SECONDS - t0)) s: $OUT"
