#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and print its path.
# torch is installed first with its exact CPU pin, then everything else under
# constraints.txt, so pip never swaps in a multi-GB CUDA build. Re-installs only when
# pyproject.toml, constraints.txt or this script change (a stamp file records them).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VAEGAN_VENV:-$ROOT/.venv}
EXTRAS=${VAEGAN_EXTRAS:-deepspeed,eval,test}
cd "$ROOT"
want="$(cat pyproject.toml constraints.txt scripts/venv.sh | sha256sum | cut -c1-16) $EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[venv] creating $VENV" >&2
  python3 -m venv "$VENV"
fi
if [ "$(cat "$VENV/.vaegan-stamp" 2>/dev/null)" != "$want" ]; then
  echo "[venv] installing torch==2.13.0 (CPU) then vaegan-dist[$EXTRAS]" >&2
  log="$VENV/install.log"
  { "$VENV/bin/python" -m pip install torch==2.13.0 &&
    "$VENV/bin/python" -m pip install -c constraints.txt -e ".[$EXTRAS]"; } >"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; echo "[venv] install failed: see $log" >&2; exit 1; }
  # optional extras that need system libraries (FFCV) are installed by scripts/optional.sh
  if [ -x scripts/optional.sh ]; then bash scripts/optional.sh "$VENV" >&2 || true; fi
  # DeepSpeed compiles its CPU shared-memory allreduce op at its first start (~35 s): build
  # it once here, into the venv (scripts/test.sh points TORCH_EXTENSIONS_DIR at it)
  if "$VENV/bin/python" -c "import deepspeed" >/dev/null 2>&1; then
    TORCH_EXTENSIONS_DIR="$VENV/torch_extensions" "$VENV/bin/python" -c \
      "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()" \
      >>"$log" 2>&1 || echo "[venv] DeepSpeed's shm op did not build (see $log): its tests build it" >&2
  fi
  echo "$want" > "$VENV/.vaegan-stamp"
fi
echo "$VENV"
