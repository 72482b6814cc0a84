"""vaegan-attrs --run RUN --out DIR [--data synthetic|SHARDS] [--num N] [--attrs a,b]
[--weights -2,-1,0,1,2] [--rows R] [--sampled] [--vectors FILE] — attribute vectors and
editing grids (paper Fig. 8, sec. 5.5)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..attributes import (
    attribute_vectors,
    edit_latents,
    encode_dataset,
    load_vectors,
    open_reader,
    save_vectors,
)
from ..generate import SnapshotError
from ..images import save_grid
from .common import add_model_args, load, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vaegan-attrs",
        description="Compute attribute vectors (mean latent with minus without each "
                    "attribute) from data with attributes and write one editing grid per "
                    "attribute: rows are images, columns z + w * v for each weight w.")
    p.add_argument("--run", required=True,
                   help="run folder (newest checkpoint), checkpoint folder or .safetensors")
    p.add_argument("--out", required=True, help="folder for vectors and grids")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (embedded dataset) or WebDataset .tar shard(s) with "
                        "{key}.jpg + {key}.json attributes")
    p.add_argument("--num", type=int, default=2048, help="synthetic images to encode")
    p.add_argument("--vectors", help="use these saved vectors instead of computing them")
    p.add_argument("--attrs", help="comma-separated attributes (default: all)")
    p.add_argument("--weights", default="-2,-1,0,1,2", help="comma-separated w values")
    p.add_argument("--rows", type=int, default=6, help="images per grid")
    p.add_argument("--sampled", action="store_true",
                   help="edit sampled latents z ~ N(0, I) instead of encoded data images")
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p)
    return p.parse_args(argv)


def _main(args: argparse.Namespace) -> int:
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    if not weights:
        raise ValueError("--weights is empty")
    model = load(args)
    res = model.cfg.model.resolution
    out = Path(args.out)
    z_data = None
    if args.vectors:
        vectors = load_vectors(args.vectors)
    else:
        reader = open_reader(args.data, res, args.num, model.cfg.data.data_seed)
        if not reader.names:
            raise SnapshotError(f"{args.data}: the samples carry no attributes (.json)")
        z_data, attrs = encode_dataset(model, reader)
        vectors = attribute_vectors(z_data, attrs, reader.names)
        path = save_vectors(vectors, out / "attribute_vectors.safetensors",
                            {"snapshot": model.file, "data": args.data, "n": len(z_data)})
        print(f"wrote {path} ({len(vectors)} vectors from {len(z_data)} images)")
    names = args.attrs.split(",") if args.attrs else list(vectors)
    unknown = [n for n in names if n not in vectors]
    if unknown:
        raise ValueError(f"no vector for {', '.join(unknown)} (have: {', '.join(vectors)})")
    out.mkdir(parents=True, exist_ok=True)
    if args.sampled or z_data is None:
        z = model.z(args.rows, args.seed)
    else:
        z = z_data[: args.rows].to(model.device)
    for name in names:
        x = model.decode(edit_latents(z, vectors[name], weights))
        path = save_grid(x, out / f"{name}.png", len(weights))
        print(f"wrote {path} (rows: images, columns: w = {args.weights})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("vaegan-attrs", lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
