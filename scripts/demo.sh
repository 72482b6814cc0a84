#!/usr/bin/env bash
# The main job of README.md on the embedded default data: shard it once (vaegan-prep synth
# -> data/demo, WebDataset tars at 32x32), then train a short CPU run of the `tiny` preset
# on those shards, writing checkpoints, TensorBoard logs, stats.jsonl and a sample grid
# into runs/demo. Running it again re-verifies the shards and resumes the run (and finds
# it finished).
#   bash scripts/demo.sh [extra vaegan-train arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/venv.sh")
cd "$ROOT"
RUN=${RUN:-runs/demo}
DATA=${DATA:-data/demo}
"$VENV/bin/vaegan-prep" synth "$DATA" --num 2048 --size 32 --format wds
"$VENV/bin/vaegan-train" --config tiny --run-dir "$RUN" --max-steps 300 \
    data.source=wds "data.path=$DATA" "$@"
echo "demo done: $RUN/samples.png  $RUN/stats.jsonl  $RUN/checkpoints/  (tensorboard --logdir $RUN/tb)"
