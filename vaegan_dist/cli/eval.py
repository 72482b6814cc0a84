"""vaegan-eval --run RUN [--data synthetic|digits|FOLDER|SHARDS] [--n N]
[--extractor digits|inception] [--inception PATH] [--json OUT] — IS / FID / KID of a
model's samples against reference data (reference features cached)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..evaluate import model_images, reference_stats, score_images
from ..features import build_extractor
from .common import add_model_args, device, load, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vaegan-eval",
        description="Score a model's samples. --extractor inception: the standard FID "
                    "network from a local TorchScript file (--inception or "
                    "$VAEGAN_INCEPTION; never downloaded): FID and KID. --extractor digits "
                    "(default): the offline sanity metric (a CNN trained on sklearn's "
                    "digits): FD, KID and a digits IS, not comparable to published numbers.")
    p.add_argument("--run", required=True,
                   help="run folder (newest checkpoint), checkpoint folder or .safetensors")
    p.add_argument("--data", default="synthetic",
                   help="reference: synthetic, digits, an image folder or .tar shards")
    p.add_argument("--n", type=int, default=2048, help="samples and reference images")
    p.add_argument("--extractor", choices=("digits", "inception"), default="digits")
    p.add_argument("--inception", help="FID Inception TorchScript file or folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--json", help="also write the scores to this JSON file")
    add_model_args(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    if args.n < 2:
        raise ValueError(f"--n must be >= 2, got {args.n}")
    dev = device(args.device)
    extractor = build_extractor(args.extractor, args.inception, dev)
    model = load(args)
    ref = reference_stats(extractor, args.data, model.cfg.model.resolution, args.n)
    scores = score_images(extractor, model_images(model, args.n, args.seed, args.temperature),
                          ref)
    scores = {"extractor": args.extractor, "data": args.data, "n": args.n,
              "step": model.step, **scores}
    for k, v in scores.items():
        print(f"{k:>10s}  {v:.6g}" if isinstance(v, float) else f"{k:>10s}  {v}")
    if args.extractor == "inception":
        print("        IS  n/a (the FID Inception network has no class head)")
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("vaegan-eval", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
