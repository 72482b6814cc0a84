"""Shared fixtures: tiny configs and models for fast CPU tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
# strict collectives (vaegan_dist/dist.py) in this process and every child it starts: a tensor
# handed to a collective off the training device is an error, as NCCL makes it on a GPU
os.environ["VAEGAN_DIST_STRICT"] = "1"


def bin_path(name: str) -> str:
    """A console script of this venv."""
    return str(VENV_BIN / name)


@pytest.fixture
def tiny_cfg():
    from vaegan_dist.config import build_config

    return build_config("tiny", [])
