"""Optional dependencies (pip extras). `require` imports one, or raises `MissingExtra` whose
message is one line naming the extra to install; every console script prints it and exits
with status 2. The extras (pyproject.toml):

- `ffcv`: the FFCV loader and `.beton` writer (`data.source=ffcv`, `vaegan-prep --format
  ffcv`); builds against system libraries.
- `deepspeed`: `train.engine=deepspeed`.
- `eval`: scikit-learn, for its bundled digits (the offline metric: `vaegan-eval
  --extractor digits`, `--data digits`, `train.eval_every_kimg`, `vaegan-prep digits`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# after the pip command, for extras that need more than pip
NOTES = {"ffcv": " (FFCV builds against libturbojpeg0-dev pkg-config libopencv-dev; "
                 "in a checkout: bash scripts/optional.sh .venv)"}


class MissingExtra(ImportError):
    """An optional dependency cannot be imported; the message is one line."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """`import module`, or raise MissingExtra: "`what` needs the `extra` extra (...):
    pip install 'vaegan-dist[extra]'"."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # ImportError, or a broken native build (FFCV, DeepSpeed ops)
        first = str(e).strip().splitlines()[0][:100] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise MissingExtra(f"{what} needs the '{extra}' extra ({reason}): "
                           f"pip install 'vaegan-dist[{extra}]'{NOTES.get(extra, '')}") from e

