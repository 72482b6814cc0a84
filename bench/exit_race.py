"""How often a two-rank gloo job dies at exit, with and without `dist.leave`.

A rank that ends with a plain return can be killed by SIGABRT ("terminate called without an
active exception") after its work is done: a gloo worker thread, kept alive by DDP past
`destroy_process_group`, frees a finished collective's tensors while the interpreter tears
itself down (see `vaegan_dist.dist.leave`). The race needs a loaded machine, so this runs
several jobs at once and interleaves the arms, and counts each arm's outcomes:

- `return`: the end of a training run (DDP steps, the checkpoint's all-gather, `dist.shutdown`)
  then `sys.exit(0)`, as vaegan-train ended before `dist.leave`;
- `leave`: the same, then `sys.exit(dist.leave(0))`;
- `leave_at_shutdown`: the same, then `dist.leave_at_shutdown(0)` and a plain return (what a
  submitit task does: TrainJob registers it, submitit writes the result, the process exits);
- `vaegan-train`: the real trainer, a tiny two-rank run (it ends through `dist.leave`).

    python bench/exit_race.py [--runs 100] [--jobs 4]
                              [--arms return leave leave_at_shutdown vaegan-train]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import append_results, markdown_table  # noqa: E402

ARMS = ("return", "leave", "leave_at_shutdown", "vaegan-train")
RANK_ARMS = ARMS[:3]  # the arms that run rank_main
TRAIN_ARGS = ["--config", "tiny", "--batch", "4", "--max-steps", "10", "--log-every", "5",
              "train.threads=1", "model.n=8", "model.latent=8", "model.d_latent=8",
              "train.image_every_kimg=0", "train.grid=2", "data.num_images=64"]


def rank_main(arm: str) -> None:
    """One rank of the `return` / `leave` arms: what a training run does last."""
    import torch

    from vaegan_dist import dist

    dist.init(60.0, "cpu")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 64))
    for _ in range(3):
        model(torch.randn(8, 64)).sum().backward()
    dist.all_gather_object("")  # the checkpoint's agreement on errors (checkpoint.save)
    dist.shutdown()
    if arm == "leave_at_shutdown":
        dist.leave_at_shutdown(0)
    sys.exit(dist.leave(0) if arm == "leave" else 0)


def one_run(arm: str, i: int, workdir: Path) -> str:
    """The outcome of one two-rank job: ok | sigabrt | failed (rc) | timeout."""
    py = Path(sys.executable)
    torchrun = [str(py.parent / "torchrun"), "--standalone", "--nproc_per_node=2"]
    if arm == "vaegan-train":
        cmd = [*torchrun, "-m", "vaegan_dist.cli.train", "--run-dir",
               str(workdir / f"run{i}"), *TRAIN_ARGS]
    else:
        cmd = [*torchrun, __file__, "--rank-main", arm]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "timeout"
    if p.returncode == 0:
        return "ok"
    if "terminate called" in out or "SIGABRT" in out:
        return "sigabrt"
    return f"failed ({p.returncode})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="two-rank jobs per arm")
    ap.add_argument("--jobs", type=int, default=4, help="jobs at once (the load)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--no-results", action="store_true", help="print only")
    ap.add_argument("--rank-main", choices=RANK_ARMS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rank_main:
        rank_main(a.rank_main)
    counts = {arm: Counter() for arm in a.arms}
    lock = threading.Lock()
    order = [(arm, i) for i in range(a.runs) for arm in a.arms]  # interleaved: same load
    with tempfile.TemporaryDirectory(prefix="exit-race-") as tmp, \
            ThreadPoolExecutor(a.jobs) as pool:
        def job(arm: str, i: int) -> None:
            outcome = one_run(arm, i, Path(tmp))
            with lock:
                counts[arm][outcome] += 1
                done = sum(sum(c.values()) for c in counts.values())
                print(f"\r{done}/{len(order)} jobs", end="", file=sys.stderr, flush=True)

        list(pool.map(lambda ai: job(*ai), order))
    print(file=sys.stderr)
    rows = []
    for arm in a.arms:
        c = counts[arm]
        other = sum(v for k, v in c.items() if k not in ("ok", "sigabrt"))
        rows.append([arm, a.runs, c["ok"], c["sigabrt"], other,
                     f"{100 * c['sigabrt'] / a.runs:.1f}%"])
    table = markdown_table(["arm", "two-rank jobs", "exit 0", "SIGABRT at exit",
                            "other failure", "SIGABRT rate"], rows)
    print(table)
    for arm in a.arms:
        if set(counts[arm]) - {"ok", "sigabrt"}:
            print(f"{arm}: {dict(counts[arm])}")
    if not a.no_results:
        path = append_results("exit_race.md", "Ranks killed at exit (gloo, two ranks)", table,
                              f"{a.jobs} jobs at once, arms interleaved, OMP_NUM_THREADS=1")
        print(f"appended to {path}")


if __name__ == "__main__":
    main()
