"""Test worker (not a test module): trains the `tiny` preset in this process, as one rank
of a torchrun / accelerate / hand-started job, and dumps this rank's per-step k (exact, as
float.hex), statistics, parameter fingerprint and final parameters to OUT/rank{R}.*.

    python tests/dist_worker.py OUT [--fail-at STEP --fail-rank R] [vaegan-train options and
                                key=value ...]"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from vaegan_dist import dist, engine, train
from vaegan_dist.cli import train as cli_train


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--fail-at", type=int, default=-1)
    p.add_argument("--fail-rank", type=int, default=1)
    p.add_argument("--perturb-rank", type=int, default=-1,
                   help="this rank nudges a decoder weight after training, then saves")
    p.add_argument("--preset", default="tiny")
    a, rest = p.parse_known_intermixed_args()  # the rest: vaegan-train's options and keys
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = cli_train.resolve(cli_train.parse_args(["--config", a.preset, "--run-dir",
                                                  str(out / "run"), *rest]))
    records: list[dict] = []
    trainer = train.Trainer(cfg)

    def record(step: int, stats) -> None:
        if step + 1 == a.fail_at and dist.rank() == a.fail_rank:
            print(f"rank {dist.rank()}: injected failure at step {a.fail_at}", flush=True)
            os._exit(3)  # a crash before that step: no exception handling, no goodbye
        host = stats.host()
        records.append({"step": step, "k_hex": float(host["k"]).hex(), **host})

    trainer.on_step = record
    if a.perturb_rank >= 0:
        cfg.train.ckpt_every_kimg = 1e9  # only the explicit save below
        trainer.fit()
        if dist.rank() == a.perturb_rank:
            with torch.no_grad():
                next(trainer.models["decoder"].parameters()).view(-1)[0] += 1e-3
        trainer.counter.step += 1  # a new checkpoint folder
        trainer.save()  # must raise: the ranks no longer agree
        return 0
    trainer.fit()
    r = dist.rank()
    fp = engine.fingerprint(trainer.controller, trainer.models)
    (out / f"rank{r}.json").write_text(json.dumps(
        {"rank": r, "world": dist.world_size(), "records": records, "fingerprint": fp,
         "engine": trainer.engine.kind, "global_batch": trainer.global_batch}))
    torch.save({k: v.detach().float().cpu() for k, v in train.weights_of(trainer.models).items()},
               out / f"rank{r}.pt")
    dist.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(dist.leave(main()))
