"""GPU train-step throughput: the trainer's own step (bench.common.make_step) over
resolution, per-GPU batch, precision and execution mode (eager, or torch.compile with CUDA
graphs), as img/s, s/kimg, model TFLOP/s and MFU against a bf16 8192^3 matmul timed in the
same run. Cases run round-robin per repeat (load changes hit all alike); medians reported;
the eager case of each (res, batch, precision) is the baseline of its speed-up column.

    python bench/bench_gpu.py                        # the default grid, on the GPU
    python bench/bench_gpu.py --res 32 64 --modes eager compile --budget-s 400
    python bench/bench_gpu.py --smoke                # a tiny CPU run of the same code (tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    N_FOR_RES,
    append_results,
    make_step,
    markdown_table,
    median,
    timed,
)

# per-GPU batches of the default grid, by resolution (the paper trains at 64 and 128)
BATCHES = {32: [64, 128], 64: [16, 64], 128: [32, 128], 256: [16], 512: [4]}
MODES = {"eager": (), "compile": ("train.compile=true", "train.compile_mode=reduce-overhead"),
         "compile-default": ("train.compile=true", "train.compile_mode=default")}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int, iters: int) -> float:
    """FLOP/s of an n^3 matmul (bf16 on CUDA, fp32 on the CPU), best of 3 timings."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / iters)
    return 2 * n**3 / best


def build(res: int, batch: int, precision: str, mode: str, device: torch.device,
          count: bool = True):
    """A zero-argument step of the trainer's own code for this case, and its FLOPs/image
    (counted on an eager step; None when not `count`)."""
    step, cfg = make_step(res, N_FOR_RES[res], 64, (f"train.precision={precision}",
                                                    *MODES[mode]), device=device.type)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, res, res, device=device) * 2 - 1).contiguous(memory_format=fmt)
    counter = iter(range(10**9))

    def run():
        step([x], next(counter))

    for _ in range(3):  # warm-up (compilation, cuDNN autotuning, CUDA graph capture)
        run()
    if not count:
        return run, None
    with FlopCounterMode(display=False) as fc:
        run()
    return run, fc.get_total_flops() / batch


def parse_case(text: str, precision: str) -> tuple[int, int, str]:
    """'128:32' or '128:32:fp32' -> (128, 32, precision)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts[:2]):
        raise SystemExit(f"--case {text!r}: expected RES:BATCH or RES:BATCH:PRECISION")
    return int(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else precision


def why(e: Exception) -> str:
    """The exception's type and first line, for a one-line report."""
    text = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def run_case(res: int, batch: int, prec: str, a: argparse.Namespace, device: torch.device,
             peak: float) -> list[list]:
    """Every mode of one case, timed round-robin; a mode that fails (out of memory, a
    compiler error) is reported and left out, the others still measured."""
    cases, flops = {}, None
    for mode in a.modes:
        t0 = time.perf_counter()
        try:
            fn, f = build(res, batch, prec, mode, device, count=flops is None)
        except Exception as e:  # noqa: BLE001 - report it, measure the rest
            print(f"{res}px batch {batch} {prec} {mode}: skipped ({why(e)})", flush=True)
            continue
        flops = flops if f is None else f
        cases[mode] = fn
        print(f"  {res}px batch {batch} {prec} {mode}: ready in {time.perf_counter() - t0:.0f}s",
              flush=True)
    times: dict[str, list[float]] = {m: [] for m in cases}
    for _ in range(a.repeats):
        for mode, fn in list(cases.items()):
            try:
                times[mode].append(timed(fn, a.iters))
            except Exception as e:  # noqa: BLE001
                print(f"{res}px batch {batch} {prec} {mode}: failed while timed ({why(e)})")
                del cases[mode], times[mode]
    base = median(times["eager"]) if times.get("eager") else None
    rows = []
    for mode, ts in times.items():
        t = median(ts)
        ips = batch / t
        rows.append([res, N_FOR_RES[res], batch, prec, mode, ips, 1000 / ips,
                     flops * ips / 1e12, flops * ips / peak, base / t if base else float("nan")])
        print(markdown_table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, nargs="+", default=sorted(BATCHES))
    p.add_argument("--batch", type=int, nargs="+", help="per-GPU batches (default: BATCHES)")
    p.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
    p.add_argument("--case", nargs="+", metavar="RES:BATCH[:PREC]",
                   help="these cases, in this order, instead of the res x batch x precision grid")
    p.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=sorted(MODES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=20, help="steps per timed repeat")
    p.add_argument("--budget-s", type=float, default=0, help="stop starting cases after this")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (tests)")
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
    if a.smoke:
        a.res, a.batch, a.precision, a.modes = [32], [2], ["fp32"], ["eager"]
        a.repeats, a.iters, a.no_save = 1, 1, True
    t_start = time.perf_counter()
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 256, 20 if device.type ==
                       "cuda" else 2)
    print(f"matmul peak: {peak / 1e12:.1f} TFLOP/s ({device})", flush=True)
    grid = [(r, b, p) for r in a.res for b in a.batch or BATCHES[r] for p in a.precision]
    if a.case:
        grid = [parse_case(c, a.precision[0]) for c in a.case]
    rows = []
    for res, batch, prec in grid:
        if a.budget_s and time.perf_counter() - t_start > a.budget_s:
            print(f"time budget {a.budget_s:g}s reached: stopping", flush=True)
            break
        rows += run_case(res, batch, prec, a, device, peak)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = markdown_table(HEADER, rows)
    print("\n" + table)
    if not a.no_save and rows:
        path = append_results("gpu_step.md", "Train step on a GPU: eager vs compiled", table,
                              f"peak = bf16 {8192}^3 matmul timed in this run: "
                              f"{peak / 1e12:.0f} TFLOP/s; medians of {a.repeats} repeats of "
                              f"{a.iters} steps; speed-up = eager time / mode time, same case")
        print(f"appended to {path}")
    return 0


HEADER = ["res", "n", "batch", "precision", "mode", "img/s", "s/kimg", "TFLOP/s",
          "MFU (of matmul)", "speed-up vs eager"]

if __name__ == "__main__":
    sys.exit(main())
