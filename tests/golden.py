"""Golden trajectories (not a test module): short fixed runs of each loss variant whose
statistics and final weights are recorded in tests/golden/, so a refactor that must not change
behaviour is checked bit for bit (tests/test_golden.py).

    python -m tests.golden record      # rewrite tests/golden/runs.json (after a deliberate change)

A record holds every logged statistic except wall-clock ones, as float.hex (exact), and the
SHA-256 of the final weights. Runs on another CPU or torch build may round differently: the
comparison is exact where the recorded machine matches and to a tolerance elsewhere."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "golden" / "runs.json"
# wall-clock, memory and machine-dependent keys: never part of a trajectory
VOLATILE = {"img_per_s", "sec_per_kimg", "peak_rss_gib", "cuda_max_alloc_gib"}
COMMON = ["model.n=8", "model.latent=8", "model.d_latent=8", "train.batch=4", "train.threads=1",
          "train.image_every_kimg=0", "train.ckpt_every_kimg=0", "train.grid=2",
          "data.num_images=64", "train.kimg=0.048", "train.log_every_kimg=0.004",
          "optim.fused=false",  # 12 steps of 4 images, a line each; foreach Adam
          # the paper's controller reading and the pairwise L_s, as recorded
          "loss.error_reading=eq10", "loss.eta=0.5", "loss.ls_match=pair",
          "loss.margin=0",  # Eq. 13's L_dis (the margin came after the recording)
          "loss.ls_prior=false",  # the paper's L_gen (the prior term came after it too)
          "loss.pullaway=0",  # and Berthelot's L_G for BEGAN (so did its pull-away default)
          "controller.l1=0.001"]  # the paper's integral gain (tiny's is 3x since)
# the readings fixed here stay reachable by config whatever the defaults become
RUNS = {
    "full": ["loss.variant=vae_began_star_lsm", "controller.k0=0.2"],
    "full_accum2": ["loss.variant=vae_began_star_lsm", "train.accum=2", "train.batch=2"],
    "began_star_lsm": ["loss.variant=began_star_lsm", "controller.k0=0.2"],
    "began": ["loss.variant=began", "controller.k0=0.2"],
}


def machine() -> str:
    from bench.common import cpu_model

    return f"{cpu_model()}; torch {torch.__version__}"


def run(name: str, extra: list[str] | None = None) -> dict:
    """One golden run in this process: {'stats': [...], 'weights_sha256': ...}."""
    from vaegan_dist.config import build_config
    from vaegan_dist.train import Trainer

    with tempfile.TemporaryDirectory() as d:
        cfg = build_config("tiny", [*COMMON, *RUNS[name], f"run_dir={d}", *(extra or [])])
        trainer = Trainer(cfg)
        trainer.fit()
        lines = (Path(d) / "stats.jsonl").read_text().splitlines()
        weights = trainer_weights(trainer)
    stats = [{k: encode(v) for k, v in json.loads(line).items() if k not in VOLATILE}
             for line in lines]
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].detach().float().cpu().contiguous().numpy().tobytes())
    return {"stats": stats, "weights_sha256": h.hexdigest()}


def trainer_weights(trainer) -> dict[str, torch.Tensor]:
    from vaegan_dist.checkpoint import unwrap

    return {f"{name}.{k}": v for name, m in trainer.models.items()
            for k, v in unwrap(m).state_dict().items()}


def encode(v):
    return float(v).hex() if isinstance(v, float) else v


def decode(v):
    return float.fromhex(v) if isinstance(v, str) and v.startswith(("0x", "-0x")) else v


def record() -> None:
    torch.set_num_threads(1)
    out = {"machine": machine(), "runs": {name: run(name) for name in RUNS}}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({len(out['runs'])} runs, machine: {out['machine']})")


if __name__ == "__main__":
    if sys.argv[1:] != ["record"]:
        sys.exit(__doc__)
    record()
