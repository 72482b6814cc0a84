"""Peak memory of one full training step (three models, Adam states, the shared forward and
its three backward phases) at each resolution, with and without activation checkpointing of
the encoder/decoder stages. Each case runs in a fresh process (peak RSS on CPU; CUDA max
allocated where there is a GPU) under an address-space cap, so a case that does not fit
fails alone instead of taking the machine down.

    python bench/bench_memory.py --res 64 128 256 512 --batch 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import N_FOR_RES, append_results, markdown_table  # noqa: E402


def child(res: int, n: int, batch: int, ckpt: bool) -> dict:
    import torch

    from bench.common import make_step

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step, _ = make_step(res, n, overrides=(f"model.checkpoint_stages={ckpt}",), device=dev.type)
    x = torch.rand(batch, 3, res, res, device=dev) * 2 - 1
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    step([x], 0)
    out = {"rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "rss_before_step_gib": base}
    if dev.type == "cuda":
        out["cuda_max_alloc_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run_case(res: int, n: int, batch: int, ckpt: bool, cap_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--child", str(res), str(n), str(batch), str(int(ckpt))]

    def limit():
        cap = int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit)
    if r.returncode != 0:
        return {"error": f"did not fit under {cap_gib} GiB address space"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        res, n, batch, ckpt = (int(v) for v in sys.argv[2:6])
        print(json.dumps(child(res, n, batch, bool(ckpt))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--res", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cap-gib", type=float, default=24.0)
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    rows = []
    for res in a.res:
        n = N_FOR_RES[res]
        r = {ck: run_case(res, n, a.batch, ck, a.cap_gib) for ck in (False, True)}
        def cell(d):
            return d.get("rss_gib", d.get("error"))
        saving = (r[False]["rss_gib"] / r[True]["rss_gib"]
                  if "rss_gib" in r[False] and "rss_gib" in r[True] else "n/a")
        rows.append([res, n, a.batch, cell(r[False]), cell(r[True]), saving,
                     r[True].get("rss_before_step_gib", "n/a")])
        print(markdown_table(HEADER, rows[-1:]), flush=True)
    table = markdown_table(HEADER, rows)
    print("\n" + table)
    if not a.no_save:
        append_results("memory.md", "Peak memory of one training step", table,
                       "peak RSS of a fresh process (GiB) after one step; ratio = without / "
                       "with checkpointing of the encoder/decoder stages")
    return 0


HEADER = ["res", "n", "batch", "peak GiB, no ckpt", "peak GiB, ckpt stages",
          "saving (ratio)", "GiB before the step (weights, data)"]

if __name__ == "__main__":
    sys.exit(main())
