"""images/s of 1 process x 2 threads vs 2 processes x 1 thread (DDP, gloo) on this machine,
same global batch, and the scaling efficiency. Prints a table and appends it to
bench/results/scaling.md with the command, machine and date.

    .venv/bin/python bench/bench_scaling.py [--steps 30] [--batch 16] [--repeats 3]"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "dist_worker.py")


def run(out: Path, procs: int, threads: int, batch: int, steps: int) -> float:
    """Median images/s over the steps after warm-up (from the per-step wall clock)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    args = [f"train.batch={batch}", "--max-steps", str(steps), f"train.threads={threads}",
            "--log-every", "1", "train.ckpt_every_kimg=1000000", "train.image_every_kimg=1000000"]
    if procs == 1:
        cmd = [sys.executable, WORKER, str(out), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", WORKER, str(out), *args]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=1800)
    lines = [json.loads(x) for x in (out / "run" / "stats.jsonl").read_text().splitlines()]
    ips = [x["img_per_s"] for x in lines[len(lines) // 3:]]  # skip warm-up steps
    return statistics.median(ips)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_scaling_{os.getpid()}"
    res: dict[str, list[float]] = {"1x2": [], "2x1": []}
    for r in range(a.repeats):  # interleaved, so machine load affects both alike
        res["1x2"].append(run(tmp / f"a{r}", 1, 2, a.batch, a.steps))
        res["2x1"].append(run(tmp / f"b{r}", 2, 1, a.batch // 2, a.steps))
    m1, m2 = statistics.median(res["1x2"]), statistics.median(res["2x1"])
    rows = [f"| 1 process x 2 threads, batch {a.batch} | {m1:.1f} | "
            + ", ".join(f"{x:.1f}" for x in res["1x2"]) + " |",
            f"| 2 processes x 1 thread, batch {a.batch // 2} each | {m2:.1f} | "
            + ", ".join(f"{x:.1f}" for x in res["2x1"]) + " |"]
    table = "\n".join([f"| setup (tiny preset, global batch {a.batch}) | median img/s | runs |",
                       "|---|---|---|", *rows,
                       f"\nScaling efficiency (2 procs x 1 thread / 1 proc x 2 threads): "
                       f"**{m2 / m1:.2f}**"])
    print(table)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo")
                   if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    head = (f"\n## {datetime.date.today()} - {cpu}, {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f} when written\n\n"
            f"Command: `.venv/bin/python bench/bench_scaling.py --steps {a.steps} "
            f"--batch {a.batch} --repeats {a.repeats}`\n\n")
    with open(ROOT / "bench" / "results" / "scaling.md", "a") as f:
        f.write(head + table + "\n")


if __name__ == "__main__":
    main()
