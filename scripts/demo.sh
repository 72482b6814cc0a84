#!/usr/bin/env bash
# The main job of README.md on the embedded default data: train a short CPU run of the
# `tiny` preset, writing checkpoints, TensorBoard logs, stats.jsonl and a sample grid
# into runs/demo. Running it again resumes the run (and finds it finished).
#   bash scripts/demo.sh [extra vaegan-train arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/venv.sh")
cd "$ROOT"
RUN=${RUN:-runs/demo}
"$VENV/bin/vaegan-train" --config tiny --run-dir "$RUN" --max-steps 300 "$@"
echo "demo done: $RUN/samples.png  $RUN/stats.jsonl  $RUN/checkpoints/  (tensorboard --logdir $RUN/tb)"
