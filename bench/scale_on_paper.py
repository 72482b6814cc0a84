"""Scale on paper: from the counted FLOPs per image of one full train step and the parameter
counts of the three models, the expected images/s per GPU on an A100 / H100 and the expected
DDP efficiency on 8, 64 and 512 GPUs under stated NCCL ring all-reduce bandwidths.

Nothing here is measured on a GPU: the FLOPs are counted by torch.utils.flop_counter on the
meta device (shapes only, so 512x512 costs nothing), everything else is the arithmetic
printed with its assumptions.

    python bench/scale_on_paper.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import N_FOR_RES, append_results, markdown_table  # noqa: E402
from vaegan_dist.config import LossConfig, ModelConfig  # noqa: E402
from vaegan_dist.models import build_models  # noqa: E402
from vaegan_dist.step import shared_forward  # noqa: E402
from vaegan_dist.variants import VARIANTS  # noqa: E402

# (resolution, per-GPU batch of the preset)
PRESETS = [(64, 16), (128, 16), (256, 8), (512, 4)]
# dense bf16 tensor-core peak (vendor data sheets), FLOP/s
PEAK = {"A100": 312e12, "H100": 989e12}
MFU = 0.30  # assumed fraction of peak a conv net with 64..384 channels reaches
# NCCL ring all-reduce bus bandwidth, bytes/s: one node (NVLink) and across nodes (per GPU
# share of 8x HDR 200 Gb/s for A100 nodes, 8x NDR 400 Gb/s for H100 nodes, ~80% usable)
BUSBW = {"A100": {8: 230e9, "inter": 20e9}, "H100": {8: 450e9, "inter": 40e9}}
HOP_LATENCY = 5e-6  # seconds per ring step across nodes
GRAD_BYTES = 4  # fp32 gradients are all-reduced (bf16 autocast keeps fp32 parameters)


def step_flops(res: int, n: int) -> tuple[float, dict[str, int]]:
    """FLOPs of one full train step per image (shared forward + the three backwards)."""
    with torch.device("meta"):
        models = build_models(ModelConfig(resolution=res, n=n))
        b = 2
        x = torch.rand(b, 3, res, res)
        eps, z = torch.randn(b, 64), torch.randn(b, 64)
    with FlopCounterMode(display=False) as fc:
        f = shared_forward(models, x, eps, z)
        cfg = LossConfig(ls_prior=True, eta=1.75)  # the default full model
        terms = VARIANTS[cfg.variant].losses(f, cfg, 0.5)
        for name, loss in (("encoder", "L_enc"), ("decoder", "L_gen"), ("disc", "L_dis")):
            torch.autograd.backward(terms[loss], inputs=list(models[name].parameters()),
                                    retain_graph=name != "disc")
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    return fc.get_total_flops() / b, params


def allreduce_s(nbytes: float, gpus: int, gpu: str) -> float:
    bw = BUSBW[gpu][8] if gpus <= 8 else BUSBW[gpu]["inter"]
    lat = 0.0 if gpus <= 8 else 2 * (gpus - 1) * HOP_LATENCY
    return 2 * (gpus - 1) / gpus * nbytes / bw + lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-save", action="store_true")
    a = p.parse_args(argv)
    flops_rows, scale_rows = [], []
    for res, batch in PRESETS:
        n = N_FOR_RES[res]
        f_img, params = step_flops(res, n)
        grad_mb = {k: v * GRAD_BYTES / 2**20 for k, v in params.items()}
        total_bytes = sum(params.values()) * GRAD_BYTES
        ips = {g: PEAK[g] * MFU / f_img for g in PEAK}
        flops_rows.append([res, n, f_img / 1e9, grad_mb["encoder"], grad_mb["decoder"],
                           grad_mb["disc"], ips["A100"], ips["H100"]])
        for g in PEAK:
            t_step = batch / ips[g]
            effs = []
            for gpus in (8, 64, 512):
                t_comm = allreduce_s(total_bytes, gpus, g)
                effs += [t_step / (t_step + t_comm), t_step / max(t_step, t_comm)]
            scale_rows.append([res, g, batch, t_step * 1e3, *effs])
    t1 = markdown_table(["res", "n", "GFLOP/img (step)", "enc grads MiB", "dec grads MiB",
                         "disc grads MiB", "A100 img/s", "H100 img/s"], flops_rows)
    t2 = markdown_table(["res", "GPU", "batch/GPU", "compute ms/step",
                         "8: no overlap", "8: overlap", "64: no overlap", "64: overlap",
                         "512: no overlap", "512: overlap"], scale_rows)
    notes = (f"assumptions: bf16 dense peak A100 {PEAK['A100']:.3g}, H100 {PEAK['H100']:.3g} "
             f"FLOP/s at {MFU:.0%} MFU; ring all-reduce time 2(p-1)/p * bytes / busbw "
             f"(+ 2(p-1) x {HOP_LATENCY * 1e6:.0f} us across nodes); busbw one node A100 "
             f"{BUSBW['A100'][8] / 1e9:.0f} GB/s, H100 {BUSBW['H100'][8] / 1e9:.0f} GB/s; across "
             f"nodes A100 {BUSBW['A100']['inter'] / 1e9:.0f} GB/s, H100 "
             f"{BUSBW['H100']['inter'] / 1e9:.0f} GB/s per GPU; fp32 gradients of all three "
             "models every step; efficiency = compute / (compute + all-reduce) with no "
             "overlap, compute / max(compute, all-reduce) with DDP's full bucket overlap")
    print(t1 + "\n\n" + t2 + "\n\n" + notes)
    if not a.no_save:
        path = append_results("scale.md", "Scale on paper", t1 + "\n\n" + t2, notes)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
