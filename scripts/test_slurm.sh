#!/usr/bin/env bash
# The SLURM tests (marker `slurm`): bring up the one-node local cluster (root, Debian:
# slurm/cluster-up.sh, accounting on), run `pytest -m slurm`, stop the cluster by its pid
# files if this script started it.
#   bash scripts/test_slurm.sh [pytest args]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/venv.sh")
cd "$ROOT"
started=0
if ! sinfo -h >/dev/null 2>&1; then
  bash slurm/cluster-up.sh
  started=1
fi
stop() { if [ "$started" = 1 ]; then bash slurm/cluster-down.sh; fi; }
trap stop EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
"$VENV/bin/python" -m pytest -m slurm "$@"
