#!/usr/bin/env bash
# The test commands of README.md: lint, then pytest.
#   bash scripts/test.sh            the default suite, before every commit (~5 min on 2 idle
#                                   cores): every test but those marked slow or gpu
#   bash scripts/test.sh --all      the whole suite, as CI runs it (.ci/run): also the tests
#                                   marked slow (long acceptance runs: kill -9 loop, DeepSpeed
#                                   ZeRO, SLURM, wheel install, ...); --slow is the same
# slurm tests run where a local cluster can be started (root, Debian). VAEGAN_TEST_WORKERS
# (2) pytest-xdist workers, each test module on one worker. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/venv.sh")
cd "$ROOT"
# The slurm tests start a local one-node cluster (slurm/cluster-up.sh), which needs root on
# Debian; elsewhere they are left out, and said so.
MARK="not slow and not gpu"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[test] not root on Debian: the slurm tests are left out (run scripts/test_slurm.sh where you can)" >&2
  MARK="$MARK and not slurm"
fi
case "${1:-}" in --all|--slow) MARK="${MARK/not slow and /}"; shift ;; esac
dirs=(); for d in vaegan_dist data_prep launch tests bench; do [ -d "$d" ] && dirs+=("$d"); done
"$VENV/bin/ruff" check "${dirs[@]}"
# one thread per process: the workers (and the processes the tests start) share the cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$VENV/torch_extensions}
WORKERS=${VAEGAN_TEST_WORKERS:-2}
XDIST=(); [ "$WORKERS" -gt 1 ] && XDIST=(-n "$WORKERS" --dist loadscope)
exec "$VENV/bin/python" -m pytest -m "$MARK" "${XDIST[@]}" "$@"
