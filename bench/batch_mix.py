"""How well the training stream mixes a labelled set's classes: distinct classes per batch
of the WebDataset stream the trainer reads (vaegan_dist.data.wds_stream.ShardStream: shard
permutation, then the seeded shuffle buffer), against independent draws.

    .venv/bin/python bench/batch_mix.py SHARDS [SHARDS ...] [--batch 16] [--buffer 1000]

SHARDS are vaegan-prep folders whose attributes are one-hot classes (`shard --classes`,
`digits`, `mnist`). A folder sharded in path order holds one class after another, and a
buffer smaller than a class mixes only the classes next to each other: the batches then
carry a few classes at a time, and a GAN sees a drifting data distribution. Prints a table
and appends it, with the command, machine and date, to bench/results/batch_mix.md."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from data_prep.shards import SHUFFLED_KINDS  # noqa: E402
from vaegan_dist.data.streaming import find_shards  # noqa: E402
from vaegan_dist.data.wds_stream import ShardStream  # noqa: E402


def class_of_keys(shards: list[tuple[str, int]]) -> dict[str, int]:
    """Sample key -> class index (the one-hot attribute that is 1), read from the shards."""
    out: dict[str, int] = {}
    for path, _ in shards:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tf.extractfile(m).read())
                    vals = list(meta["attrs"].values())
                    if sorted(vals) != [0] * (len(vals) - 1) + [1]:
                        raise SystemExit(f"batch_mix: {path}: sample {meta['key']} has no "
                                         "one-hot class attributes (shard with --classes)")
                    out[meta["key"]] = vals.index(1)
    return out


def mix(folder: str, split: str, batch: int, buffer: int, seed: int) -> dict:
    """Distinct classes per batch over one epoch of the stream, and what independent draws
    from the same class frequencies would give (sum over classes of 1 - (1 - p)^batch)."""
    man = json.loads((Path(folder) / "manifest.json").read_text())
    size = int(sorted(man["splits"][split]["sizes"], key=int)[0])
    shards = find_shards(folder, split, size)
    cls = class_of_keys(shards)
    counts = np.array([len(set(cls[k] for k in b[1]))
                       for b in ShardStream(shards, batch, seed=seed, shuffle_buffer=buffer,
                                            epochs=1, drop_last=True)])
    p = np.bincount(list(cls.values())) / len(cls)
    order = man["settings"].get("order") or (
        "path (older vaegan-prep)" if man["source"]["kind"] in SHUFFLED_KINDS else "listing")
    return {"order": order,
            "classes": len(p), "shards": len(shards), "batches": len(counts),
            "mean": float(counts.mean()), "min": int(counts.min()),
            "independent": float((1 - (1 - p) ** batch).sum())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("shards", nargs="+", help="vaegan-prep folders with one-hot classes")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=16, help="batch size (the tiny preset's)")
    p.add_argument("--buffer", type=int, default=1000,
                   help="shuffle buffer (data.shuffle_buffer's default)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rows = []
    for folder in a.shards:
        if not (Path(folder) / "manifest.json").is_file():
            print(f"batch_mix: {folder}: no manifest.json (not a vaegan-prep folder)",
                  file=sys.stderr)
            return 2
        r = mix(folder, a.split, a.batch, a.buffer, a.seed)
        rows.append([folder, r["order"], r["classes"], r["shards"], r["batches"],
                     f"{r['mean']:.2f}", r["min"], f"{r['independent']:.2f}"])
    table = common.markdown_table(
        ["shards", "order", "classes", "shard files", "batches", "classes per batch (mean)",
         "min", "independent draws"], rows)
    print(table)
    common.append_results("batch_mix.md", "Classes per training batch",
                          table, f"batch {a.batch}, shuffle buffer {a.buffer}, one epoch "
                          f"of split {a.split}, seed {a.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
