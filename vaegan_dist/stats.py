"""Run statistics: `stats.jsonl` (one strict-JSON object per logged step, floats at full
precision, non-finite values as the strings "NaN"/"Infinity"/"-Infinity") and TensorBoard
scalars/images under RUN/tb/, written by rank 0 only."""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path

import numpy as np
import torch

SCALAR_GROUPS = {
    "L_": "loss", "k": "controller", "k_prev": "controller", "e": "controller",
    "M": "controller",
    "active_units": "vae", "lr": "progress", "img_per_s": "progress",
    "sec_per_kimg": "progress", "peak_rss_gib": "memory", "cuda_max_alloc_gib": "memory",
    "fd_digits": "eval", "kid_digits": "eval",
    "skipped_steps": "guard", "skipped": "guard", "rollback": "guard",
    "diversity": "health", "k_at_clamp": "health", "k_clamped_steps": "health",
    "margin_hit": "controller", "margin_share": "health", "margin_steps": "health",
}


NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_value(v):
    """Strict JSON: a non-finite float is written as the string "NaN", "Infinity" or
    "-Infinity" (Python's float() reads them back), never as a bare NaN token."""
    if isinstance(v, float) and not math.isfinite(v):
        return NONFINITE[repr(v)]
    return v


def tag_for(key: str) -> str:
    """TensorBoard tag whose last component is the stats.jsonl key (`loss/L_d`, `controller/k`)."""
    group = SCALAR_GROUPS.get(key) or (SCALAR_GROUPS["L_"] if key.startswith("L_") else "misc")
    return f"{group}/{key}"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class StatsWriter:
    """Appends JSONL lines and mirrors numeric values into TensorBoard."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.path = run_dir / "stats.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:  # tensorboard is a declared dependency; keep going without
                print("warning: tensorboard not installed, no TB logs", flush=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({k: json_value(v) for k, v in record.items()},
                               allow_nan=False) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k in ("step", "nimg") or not isinstance(v, (int, float)):
                    continue
                if isinstance(v, float) and not math.isfinite(v):
                    continue
                self.tb.add_scalar(tag_for(k), v, global_step=record["nimg"])

    def image(self, tag: str, grid_u8: np.ndarray, nimg: int) -> None:
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, torch.from_numpy(grid_u8), nimg, dataformats="HWC")

    def flush(self) -> None:
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
