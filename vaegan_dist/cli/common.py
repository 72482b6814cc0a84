"""Shared bits of the model-using CLIs: one-line errors, device choice."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .. import dist
from ..config import ConfigError
from ..extras import MissingExtra
from ..features import ExtractorError
from ..generate import SnapshotError

ERRORS = (SnapshotError, ExtractorError, ConfigError, MissingExtra, FileNotFoundError,
          ValueError)


def device(name: str) -> str:
    """`auto` -> CUDA where there is one, else the CPU (dist.device_for, as a string)."""
    return str(dist.device_for(name))


def run(prog: str, fn: Callable[[], int]) -> int:
    """Call fn; expected errors become one line on stderr and exit status 2."""
    try:
        return fn()
    except ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
