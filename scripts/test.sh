#!/usr/bin/env bash
# The test command of README.md (and of .ci/run): lint, then the default test suite.
#   bash scripts/test.sh            default suite (< 15 min on 2 cores)
#   bash scripts/test.sh --slow     also the tests marked slow and slurm
# Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$(bash "$ROOT/scripts/venv.sh")
cd "$ROOT"
MARK="not slow and not gpu and not slurm"
if [ "${1:-}" = "--slow" ]; then MARK="not gpu"; shift; fi
dirs=(); for d in vaegan_dist data_prep launch tests bench; do [ -d "$d" ] && dirs+=("$d"); done
"$VENV/bin/ruff" check "${dirs[@]}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "$VENV/bin/python" -m pytest -m "$MARK" "$@"
