"""Helpers for the multi-process tests: start tests/dist_worker.py under torchrun, accelerate
or by hand, and read back each rank's dump."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests import procs

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "dist_worker.py")
BIN = Path(sys.executable).parent


def env(threads: int = 1) -> dict:
    e = {k: v for k, v in os.environ.items()
         if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
         and not k.startswith("SLURM_")}
    e["OMP_NUM_THREADS"] = str(threads)
    e["PYTHONPATH"] = str(ROOT)
    return e


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Bounded (tests/procs.py): a timeout kills the process group and fails the test."""
    return procs.run(cmd, cwd=ROOT, env=env(), timeout=timeout)


def torchrun(out: Path, nproc: int, *args: str, timeout: float = 300):
    return run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", WORKER, str(out), *args], timeout)


def single(out: Path, *args: str, timeout: float = 300):
    return run([sys.executable, WORKER, str(out), *args], timeout)


def load(out: Path, rank: int) -> tuple[dict, dict[str, torch.Tensor]]:
    return (json.loads((out / f"rank{rank}.json").read_text()),
            torch.load(out / f"rank{rank}.pt"))


def check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)
