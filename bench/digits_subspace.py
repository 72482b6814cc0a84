"""Where a trained D's fake/real energy gap on scikit-learn digits comes from: every real
digit is an 8x8 image upscaled bilinearly, so the reals lie in a 64-dimensional linear
subspace of the 32x32 images, and a D with a 64-unit bottleneck can learn to reconstruct
exactly that subspace. A generated image has a part outside it, which such a D cannot
reproduce. This prints D's L1 reconstruction error (the energy L_d / L_g of the step) for
real digits, for G's samples, for G's samples projected onto the subspace, and for real
digits plus the samples' off-subspace part.

    .venv/bin/python bench/digits_subspace.py RUN_OR_CHECKPOINT [--n 512] [--seed 1]

Measured: bench/results/fidelity.md, "BEGAN's collapse at a wide D, and EBGAN's
pull-away term"."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaegan_dist.data import to_float  # noqa: E402
from vaegan_dist.features import digits_images  # noqa: E402
from vaegan_dist.generate import SnapshotError, load_model  # noqa: E402


def projector(size: int, source: int = 8) -> torch.Tensor:
    """Orthogonal projection onto the bilinear upscales of source x source images (the
    prep's F.interpolate, align_corners=False), as a (size^2, size^2) matrix."""
    basis = torch.eye(source * source, dtype=torch.float64).view(-1, 1, source, source)
    up = F.interpolate(basis, size=(size, size), mode="bilinear", align_corners=False)
    u = up.view(source * source, size * size).T
    return u @ torch.linalg.pinv(u)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("snapshot", help="run folder, checkpoint folder or weights file")
    ap.add_argument("--n", type=int, default=512, help="real and generated images (512)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the prior samples (1)")
    args = ap.parse_args(argv)
    try:
        m = load_model(args.snapshot)
    except SnapshotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = m.cfg.model.resolution
    real = to_float(torch.from_numpy(np.array(digits_images(res)[0][:args.n])))
    p = projector(res).float()

    def proj(x: torch.Tensor) -> torch.Tensor:
        return (x.reshape(-1, res * res) @ p.T).view_as(x)

    @torch.no_grad()
    def energy(x: torch.Tensor) -> float:
        return (x - m.disc(x)[1]).abs().mean().item()

    fake = m.sample(args.n, seed=args.seed)
    off = fake - proj(fake)
    rows = [("real digits", real), ("G's samples", fake),
            ("G's samples projected onto the subspace", proj(fake).clamp(-1, 1)),
            ("real digits + the samples' off-subspace part", (real + off).clamp(-1, 1))]
    e_real = energy(real)
    print(f"{m.file} (step {m.step}); mean |off-subspace part|: reals "
          f"{(real - proj(real)).abs().mean():.4f}, samples {off.abs().mean():.4f}\n")
    print("| images | D's L1 reconstruction error | over the reals' |\n| --- | --- | --- |")
    for name, x in rows:
        e = energy(x)
        print(f"| {name} | {e:.4f} | {e / e_real:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
