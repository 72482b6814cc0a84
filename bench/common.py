"""Shared helpers of the benchmarks: machine description, results files, a model/step
factory. Benchmarks print a table and append it, with the exact command, to a committed
results file under bench/results/."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# the filters unit n of the presets at each resolution (BEGAN: 64, then 128 from 128x128)
N_FOR_RES = {32: 64, 64: 64, 128: 128, 256: 128, 512: 128}


def make_step(res: int, n: int, latent: int = 64, overrides: tuple[str, ...] = (),
              device: str = "cpu"):
    """The trainer's own step (vaegan_dist.train.build_step: models, optimisers, engine,
    controller) for a resolution and width; `overrides` are config keys (train.precision,
    train.channels_last, optim.fused, ...), so a benchmark measures what training runs."""
    from vaegan_dist.config import build_config
    from vaegan_dist.train import build_step

    cfg = build_config(None, [f"model.resolution={res}", f"model.n={n}", f"model.latent={latent}",
                              f"model.d_latent={latent}", "optim.lr=1e-5",
                              f"train.device={device}", *overrides])
    return build_step(cfg, torch.device(device)), cfg


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def append_results(name: str, title: str, table: str, notes: str = "") -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"\n## {title} ({stamp})\n\n- command: `{command()}`\n- machine: {machine()}\n"
             + (f"- {notes}\n" if notes else "") + f"\n{table}\n")
    with open(path, "a") as f:
        f.write(block)
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def timed(fn, iters: int) -> float:
    """Seconds per call of `fn` over `iters` calls (after the caller's warm-up); on a GPU
    the queued work is drained before and after, so only these calls are timed."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def median(xs: list[float]) -> float:
    return statistics.median(xs)
