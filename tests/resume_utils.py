"""Helpers of the resume/preemption tests: small runs of the real entry points and exact
comparisons of what checkpoints hold."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tests import procs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# A very small run: the machine is shared, 2 cores; deterministic CPU ops, 1 thread.
# Options first, key=value overrides last (argparse takes the positionals in one run).
OPTS = ["--config", "tiny", "--batch", "4", "--log-every", "1"]
OVERRIDES = ["train.threads=1", "model.n=8", "model.latent=8", "model.d_latent=8",
             "train.image_every_kimg=0", "train.grid=2", "data.num_images=64"]


def cli_args(run_dir: Path, steps: int | None, *opts: str,
             overrides: tuple[str, ...] = ()) -> list[str]:
    """The CLI arguments of a small run; steps None: the length comes in `overrides`."""
    length = [] if steps is None else ["--max-steps", str(steps)]
    return [*OPTS, "--run-dir", str(run_dir), *length, *opts, *OVERRIDES, *overrides]


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def train_cmd(run_dir: Path, steps: int | None, *extra: str, nproc: int = 1,
              overrides: tuple[str, ...] = ()) -> list[str]:
    args = cli_args(run_dir, steps, *extra, overrides=overrides)
    if nproc == 1:
        return [sys.executable, "-m", "vaegan_dist.cli.train", *args]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}",
            "-m", "vaegan_dist.cli.train", *args]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Bounded (tests/procs.py): a timeout kills the process group and fails the test."""
    return procs.run(cmd, cwd=ROOT, env=env(), timeout=timeout)


def final_state(run_dir: Path) -> dict:
    from vaegan_dist import checkpoint as ckpt

    latest = ckpt.latest(run_dir)
    assert latest is not None, f"no complete checkpoint in {run_dir}"
    state, _ = ckpt.load(latest)
    return state


def _equal(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: max diff {(a.double() - b.double()).abs().max()}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training_state(a: dict, b: dict) -> None:
    """Bit-identical models, optimiser states, controller, lr schedule and step."""
    for key in ("models", "optimizers", "controller", "lr", "progress", "data"):
        _equal(a[key], b[key], key)


def k_trajectory(run_dir: Path) -> dict[int, float]:
    """k after every step (the last record of a step wins: a killed run may log a step twice)."""
    out = {}
    for line in (Path(run_dir) / "stats.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec["k"]
    return out


STRAIGHT_STEPS = 40


@functools.lru_cache(maxsize=1)
def straight_two_procs() -> dict:
    """Final state of an uninterrupted 2-process run of STRAIGHT_STEPS steps, computed once
    per test session (the preemption tests all compare against it)."""
    run_dir = Path(tempfile.mkdtemp(prefix="vaegan-straight2-"))
    atexit.register(shutil.rmtree, run_dir, True)
    r = run(train_cmd(run_dir, STRAIGHT_STEPS, "--ckpt-every", "100", nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    return final_state(run_dir)
