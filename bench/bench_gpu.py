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

from bench.common import N_FOR_RES, append_results, make_step, markdown_table, median  # noqa: E402

# per-GPU batches of the default grid, by resolution (the paper trains at 64 and 128)
BATCHES = {32: [64, 128], 64: [16, 64], 128: [32, 128], 256: [16], 512: [4]}
MODES = {"eager": (), "compile": ("train.compile=true", "train.compile_mode=reduce-overhead")}


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


def build(res: int, batch: int, precision: str, mode: str, device: torch.device):
    """A zero-argument step of the trainer's own code for this case, and its FLOPs/image."""
    step, cfg = make_step(res, N_FOR_RES[res], 64, (f"train.precision={precision}",
                                                    *MODES[mode]), device=device.type)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    x = (torch.rand(batch, 3, res, res, device=device) * 2 - 1).contiguous(memory_format=fmt)
    counter = iter(range(10**9))

    def run():
        step([x], next(counter))

    run()  # warm-up (compilation, cuDNN autotuning, CUDA graph capture)
    run()
    with FlopCounterMode(display=False) as fc:
        run()
    return run, fc.get_total_flops() / batch


def timed(fn, iters: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, nargs="+", default=sorted(BATCHES))
    p.add_argument("--batch", type=int, nargs="+", help="per-GPU batches (default: BATCHES)")
    p.add_argument("--precision", nargs="+", default=["bf16", "fp32"])
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
    rows = []
    for res in a.res:
        for batch in a.batch or BATCHES[res]:
            for prec in a.precision:
                if a.budget_s and time.perf_counter() - t_start > a.budget_s:
                    print(f"time budget {a.budget_s:g}s reached: stopping", flush=True)
                    break
                cases = {}
                for mode in a.modes:
                    try:
                        cases[mode] = build(res, batch, prec, mode, device)
                    except Exception as e:  # noqa: BLE001 - e.g. out of memory: report it
                        print(f"{res}px batch {batch} {prec} {mode}: skipped "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                times: dict[str, list[float]] = {m: [] for m in cases}
                for _ in range(a.repeats):
                    for mode, (fn, _) in cases.items():
                        times[mode].append(timed(fn, a.iters, device))
                base = median(times["eager"]) if "eager" in times else None
                for mode, (_, flops) in cases.items():
                    t = median(times[mode])
                    ips = batch / t
                    rows.append([res, N_FOR_RES[res], batch, prec, mode, ips, 1000 / ips,
                                 flops * ips / 1e12, flops * ips / peak,
                                 base / t if base else float("nan")])
                    print(markdown_table(HEADER, rows[-1:]).splitlines()[-1], flush=True)
                del cases
    table = markdown_table(HEADER, rows)
    print("\n" + table)
    if not a.no_save:
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
