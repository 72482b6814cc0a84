"""vaegan-sample --run RUN_DIR|SNAPSHOT --n N --out FILE.png [--seed S] [--temperature T]
[--nrow R] [--individual DIR] [--device D] [--no-ema]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from ..images import save_grid, to_uint8
from .common import add_model_args, load, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vaegan-sample",
                                description="Draw N samples z ~ N(0, t^2 I) from a trained model.")
    p.add_argument("--run", required=True,
                   help="run folder (newest checkpoint), checkpoint folder or .safetensors")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--out", help="grid PNG to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", "--truncation", dest="temperature", type=float, default=1.0,
                   help="scale of z (truncation-style: < 1 gives typical, cleaner samples)")
    p.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    p.add_argument("--individual", metavar="DIR", help="also write each sample as DIR/NNNNN.png")
    add_model_args(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    if not args.out and not args.individual:
        raise ValueError("give --out FILE.png and/or --individual DIR")
    model = load(args)
    x = model.sample(args.n, args.seed, args.temperature)
    if args.out:
        save_grid(x, args.out, args.nrow)
        print(f"wrote {args.out} ({args.n} samples, step {model.step}, seed {args.seed}"
              + (", weight-averaged generator)" if model.ema else ")"))
    if args.individual:
        d = Path(args.individual)
        d.mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(to_uint8(x)):
            Image.fromarray(a).save(d / f"{i:05d}.png")
        print(f"wrote {args.n} PNGs to {d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("vaegan-sample", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
