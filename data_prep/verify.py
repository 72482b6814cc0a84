"""`vaegan-prep verify OUT`: re-hash every shard and beton against the manifest and decode
every sample; the list of problems is empty when the output is sound."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from vaegan_dist.codec import decode

from .shards import sha256_file


def check_tar(path: Path, size: int, expected: int) -> list[str]:
    problems, n = [], 0
    try:
        with tarfile.open(path) as tf:
            members = tf.getmembers()
            by_key: dict[str, dict] = {}
            for m in members:
                key, _, ext = m.name.partition(".")
                by_key.setdefault(key, {})[ext] = tf.extractfile(m).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        return [f"{path.name}: unreadable tar ({e})"]
    for key, d in sorted(by_key.items()):
        ext = "jpg" if "jpg" in d else "png" if "png" in d else None
        if ext is None or "json" not in d:
            problems.append(f"{path.name}: sample {key} lacks an image or json")
            continue
        try:
            img = decode(d[ext], ext)
            json.loads(d["json"])
        except Exception as e:  # any decode failure is a problem to report
            problems.append(f"{path.name}: sample {key} does not decode ({e})")
            continue
        if img.shape != (size, size, 3):
            problems.append(f"{path.name}: sample {key} is {img.shape}, expected {size}x{size}")
        n += 1
    if len(by_key) != expected:
        problems.append(f"{path.name}: {len(by_key)} samples, manifest says {expected}")
    return problems


def verify(out: Path) -> tuple[int, list[str]]:
    """(samples checked, problems)."""
    mpath = out / "manifest.json"
    if not mpath.is_file():
        return 0, [f"{mpath}: missing (the sharding run did not finish)"]
    try:
        man = json.loads(mpath.read_text())
        splits = man["splits"]
    except (ValueError, KeyError) as e:
        return 0, [f"{mpath}: unreadable ({e})"]
    problems, checked = [], 0
    for _split, sp in sorted(splits.items()):
        for size, sz in sorted(sp["sizes"].items()):
            for sh in sz["shards"]:
                p = out / sh["name"]
                if not p.is_file():
                    problems.append(f"{sh['name']}: missing")
                    continue
                if sha256_file(p) != sh["sha256"]:
                    problems.append(f"{sh['name']}: sha256 differs from the manifest")
                probs = check_tar(p, int(size), sh["count"])
                problems += probs
                checked += sh["count"]
            if "beton" in sz:
                b = sz["beton"]
                p = out / b["name"]
                if not p.is_file():
                    problems.append(f"{b['name']}: missing")
                elif sha256_file(p) != b["sha256"]:
                    problems.append(f"{b['name']}: sha256 differs from the manifest")
    return checked, problems
