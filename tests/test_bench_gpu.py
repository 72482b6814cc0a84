"""The GPU benchmark's code path, run small on the CPU (--smoke): it builds the trainer's
own step, times it and prints its table. Its numbers mean something only on a GPU
(bench/results/gpu_step.md)."""

import os
import sys

from tests import procs
from tests.dist_util import ROOT


def test_gpu_benchmark_smoke_run_prints_its_table():
    r = procs.run([sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--smoke"],
                  timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, procs.tail(r.stdout + r.stderr)
    assert "matmul peak:" in r.stdout
    row = [line for line in r.stdout.splitlines() if line.startswith("| 32 | 64 | 2 | fp32 |")]
    assert row and "eager" in row[-1]
