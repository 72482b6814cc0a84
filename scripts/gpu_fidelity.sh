#!/usr/bin/env bash
# Issue 12's GPU check, prepared for one call on a lent GPU machine (the `device` tool): the
# fidelity benchmark on scikit-learn digits (a real labelled set that is not MNIST), each seed
# a process of its own on the one GPU, beside the `gpu` tests. It uses the machine's own torch,
# scikit-learn and pytest (PYTHONPATH=.); without webdataset the benchmark trains from a PNG
# copy of the shards. Carry runs/fidelity/shards-digits-32 and runs/fidelity/classifier to
# reuse the CPU runs' shards and feature classifier (else both are made there, ~1 minute).
#   bash scripts/gpu_fidelity.sh [KIMG] [SEEDS] [DEVICE] [fidelity.py args, e.g. --arm ...]
#   (defaults 100 "0 1 2" cuda; no --arm: the three variants at the project's defaults)
# DATA=FOLDER: another labelled set instead of digits, a folder of class folders (SRC/CLASS/*
# or SRC/{train,test,val}/CLASS/*) or a vaegan-prep shard folder with one-hot labels.
# Groups at other budgets side by side: more calls in the background, each with its own OUT
# (e.g. OUT=$OUT/b) and GPU_TESTS=0 (the `gpu` tests run once, in the first group); the
# device returns a handful of files, so pack the groups into one archive at the end.
# Everything comes back in one file, $OUT/gpu_fidelity.tar.gz (logs, per-seed tables, grids).
set -uo pipefail
KIMG=${1:-100}
SEEDS=${2:-"0 1 2"}
DEVICE=${3:-cuda}
DATA=${DATA:-digits}
shift $(($# < 3 ? $# : 3))
BUDGET=${BUDGET:-420}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_fidelity}
RES=$OUT/gpu_fidelity
mkdir -p "$RES"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
t0=$SECONDS
{ nvidia-smi; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda)"; nproc; } \
  >"$RES/machine.txt" 2>&1
pids=()
if [ "$DEVICE" = cuda ] && [ "${GPU_TESTS:-1}" = 1 ]; then  # GPU_TESTS=0: a second group
  timeout $((BUDGET / 2)) "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py \
    >"$RES/gpu_tests.log" 2>&1 &
  pids+=($!)
fi
for s in $SEEDS; do
  timeout "$BUDGET" "$PY" bench/fidelity.py --device "$DEVICE" --data "$DATA" --kimg "$KIMG" \
    --seeds "$s" --threads 4 --results-dir "$RES/s$s" --docs "$RES/s$s" \
    --title "Fidelity on $(basename "$DATA") ($DEVICE), GPU settings, seed $s" "$@" \
    >"$RES/fidelity-s$s.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; echo "[gpu_fidelity] pid $p exit $?"; done
echo "[gpu_fidelity] done in $((SECONDS - t0)) s"
tail -n 3 "$RES"/gpu_tests.log 2>/dev/null
grep -h " seed " "$RES"/fidelity-s*.log
tar -czf "$OUT/gpu_fidelity.tar.gz" -C "$OUT" gpu_fidelity && rm -rf "$RES"
