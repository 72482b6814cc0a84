"""Deterministic, resumable, parallel sharding. Shard i of a split holds inputs
[i*S, (i+1)*S) of that split in a fixed order (the listing's; for folders a seeded
permutation of it, see SHUFFLED_KINDS), bad ones dropped, so the shard
boundaries do not depend on the number of workers or on which inputs turn out bad. Every
file is written under a temporary name and renamed when complete; a finished shard's
record (.parts/SPLIT-NNNNNN.json) lets a re-run keep it after re-hashing it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaegan_dist.fileio import sha256_file

from . import imaging
from .imaging import Settings, Skip
from .inputs import Item, Listing

PARTS = ".parts"


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = len(data), 0, 0o644, 0, 0
    ti.uname = ti.gname = ""
    return ti, io.BytesIO(data)


def tar_bytes(samples: list[tuple[str, bytes, bytes]], ext: str) -> bytes:
    """A byte-stable tar: fixed metadata, {key}.{ext} then {key}.json per sample."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for key, img, meta in samples:
            tf.addfile(*_member(f"{key}.{ext}", img))
            tf.addfile(*_member(f"{key}.json", meta))
    return buf.getvalue()


@dataclass(frozen=True)
class Task:
    split: str
    index: int
    items: tuple[Item, ...]
    kind: str
    root: str
    settings: Settings
    out_dir: str  # where the tars go
    parts_dir: str
    tag: str  # settings hash: a record made with other settings is redone
    synth_seed: int = 0


def shard_name(split: str, size: int, index: int) -> str:
    return f"{split}-{size}-{index:06d}.tar"


# how the embedded sources reach each size (the manifest's resize_filter; files: lanczos)
EMBEDDED_RESIZE = {"synthetic": "none (rendered at each size)",
                   "digits": "bilinear (8x8 source)",
                   "mnist": "bilinear up, area down (28x28 source)"}


def _load_item(task: Task, item: Item) -> dict:
    s = task.settings
    if task.kind in EMBEDDED_RESIZE:  # embedded: "KIND:INDEX", rendered here
        from vaegan_dist.data.synthetic import render
        from vaegan_dist.features import digits_images

        from .mnist import mnist_image

        i = int(item.source.split(":")[1])
        if task.kind == "synthetic":
            return {size: render(i, size, task.synth_seed) for size in s.sizes}
        if task.kind == "mnist":
            return {size: mnist_image(i, size) for size in s.sizes}
        return {size: digits_images(size)[0][i] for size in s.sizes}
    path = os.path.join(task.root, item.source)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Skip(f"unreadable ({e.strerror or type(e).__name__})") from e
    return imaging.load(data, s)


def record_path(task: Task) -> Path:
    return Path(task.parts_dir) / f"{task.split}-{task.index:06d}.json"


def finished(task: Task) -> dict | None:
    """The record of a finished shard whose files still hash as recorded, else None."""
    try:
        rec = json.loads(record_path(task).read_text())
    except (OSError, ValueError):
        return None
    if rec.get("tag") != task.tag:
        return None
    for sh in rec["shards"].values():
        p = Path(task.out_dir) / sh["name"]
        if not p.is_file() or sha256_file(p) != sh["sha256"]:
            return None
    return rec


def run_task(task: Task) -> dict:
    """Process one shard's inputs at every size; returns (and records) what was written."""
    rec = finished(task)
    if rec is not None:
        return rec
    delay = float(os.environ.get("VAEGAN_PREP_TASK_DELAY", "0"))  # tests: a slow run to kill
    s = task.settings
    per_size: dict[int, list] = {size: [] for size in s.sizes}
    skipped = []
    for item in task.items:
        try:
            arrays = _load_item(task, item)
        except Skip as e:
            skipped.append({"path": item.source, "reason": str(e)})
            continue
        meta = json.dumps({"key": item.key, "source": item.source, "split": item.split,
                           "attrs": item.attrs}, sort_keys=True).encode()
        for size, arr in arrays.items():
            per_size[size].append((item.key, imaging.encode(arr, s), meta))
    shards = {}
    for size, samples in per_size.items():
        name = shard_name(task.split, size, task.index)
        data = tar_bytes(samples, s.codec)
        atomic_write(Path(task.out_dir) / name, data)
        shards[str(size)] = {"name": name, "sha256": hashlib.sha256(data).hexdigest(),
                             "count": len(samples)}
    rec = {"tag": task.tag, "split": task.split, "index": task.index, "shards": shards,
           "skipped": skipped}
    if delay:
        time.sleep(delay)
    atomic_write(record_path(task), json.dumps(rec, sort_keys=True).encode())
    return rec


# listings in path order, which groups similar images (a class or source per folder): their
# items are written in a seeded random order, so that a shard, and the few shards a
# reader's shuffle buffer mixes, hold the whole set's variety and not one class
SHUFFLED_KINDS = ("folder", "classes")
ORDER_SEED = 0


def order_setting(kind: str) -> dict:
    """The manifest's (and resume tag's) record of the order samples were written in."""
    return {"order": f"shuffled (seed {ORDER_SEED})" if kind in SHUFFLED_KINDS else "listing"}


def make_tasks(listing: Listing, settings: Settings, out_dir: Path, parts_dir: Path,
               shard_size: int, tag: str, synth_seed: int = 0) -> list[Task]:
    by_split: dict[str, list[Item]] = {}
    for it in listing.items:
        by_split.setdefault(it.split, []).append(it)
    tasks = []
    for split in sorted(by_split):
        items = by_split[split]
        if listing.kind in SHUFFLED_KINDS:
            perm = np.random.default_rng(ORDER_SEED).permutation(len(items))
            items = [items[i] for i in perm]
        for i in range(0, len(items), shard_size):
            tasks.append(Task(split, i // shard_size, tuple(items[i:i + shard_size]),
                              listing.kind, listing.root, settings, str(out_dir),
                              str(parts_dir), tag, synth_seed))
    return tasks
