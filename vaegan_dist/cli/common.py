"""Shared bits of the model-using CLIs: one-line errors, device choice."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import dist
from ..config import ConfigError
from ..extras import MissingExtra
from ..features import ExtractorError
from ..generate import Model, SnapshotError, load_model

ERRORS = (SnapshotError, ExtractorError, ConfigError, MissingExtra, FileNotFoundError,
          ValueError)


def device(name: str) -> str:
    """`auto` -> CUDA where there is one, else the CPU (dist.device_for, as a string)."""
    return str(dist.device_for(name))


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--device and --no-ema, the options of every command that loads a trained model."""
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true",
                   help="use the trained decoder, not the moving average of its weights "
                        "that a run with train.ema_kimg > 0 samples from")


def load(args: argparse.Namespace) -> Model:
    """The model of --run as add_model_args' options ask."""
    return load_model(args.run, device(args.device), ema=not args.no_ema)


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
