"""vaegan-interp --run RUN --out FILE.png [--seeds A B | --images IMG1 IMG2] [--rows R]
[--steps T] [--mode slerp|lerp] [--gif FILE.gif] — latent interpolation (paper Fig. 6)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..generate import interpolate, load_image, save_gif, tile_columns
from ..images import save_grid
from .common import add_model_args, load, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vaegan-interp",
        description="Decode latents along the line (lerp) or sphere (slerp) between two "
                    "encoded images or two seeds; one row per pair.")
    p.add_argument("--run", required=True,
                   help="run folder (newest checkpoint), checkpoint folder or .safetensors")
    p.add_argument("--out", required=True, help="strip/grid PNG")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--seeds", type=int, nargs=2, metavar=("A", "B"), default=None,
                     help="endpoints z ~ N(0, I) from these seeds (row r uses A+r, B+r)")
    src.add_argument("--images", nargs=2, metavar=("IMG1", "IMG2"),
                     help="endpoints: encoder means of two image files (VAE models)")
    p.add_argument("--rows", type=int, default=1, help="pairs (rows) for --seeds")
    p.add_argument("--steps", type=int, default=8, help="images per row, endpoints included")
    p.add_argument("--mode", choices=("slerp", "lerp"), default="slerp")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--gif", help="also write an animated GIF (frames = steps, rows stacked)")
    add_model_args(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    if args.rows < 1:
        raise ValueError(f"--rows must be >= 1, got {args.rows}")
    model = load(args)
    if args.images:
        r = model.cfg.model.resolution
        z = model.encode_u8(np.stack([load_image(f, r) for f in args.images]))
        z0, z1, rows = z[:1], z[1:], 1
    else:
        a, b = args.seeds or (0, 1)
        rows = args.rows
        z0, z1 = _per_row(model, a, rows, args), _per_row(model, b, rows, args)
    x = model.decode(interpolate(z0, z1, args.steps, args.mode))
    save_grid(x, args.out, args.steps)
    print(f"wrote {args.out} ({rows} x {args.steps}, {args.mode})")
    if args.gif:
        save_gif(tile_columns(x, rows), args.gif)
        print(f"wrote {args.gif}")
    return 0


def _per_row(model, seed: int, rows: int, args: argparse.Namespace):
    import torch

    return torch.cat([model.z(1, seed + r, args.temperature) for r in range(rows)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("vaegan-interp", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
