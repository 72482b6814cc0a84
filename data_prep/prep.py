"""The `shard` and `synth` runs: list inputs, process shards in parallel, write FFCV
betons, then the manifest (last, atomically: its presence means the run is complete)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from . import __version__
from .imaging import Settings
from .inputs import Listing
from .shards import (
    EMBEDDED_RESIZE,
    PARTS,
    atomic_write,
    make_tasks,
    order_setting,
    run_task,
    sha256_file,
)


def _clean_tmp(*dirs: Path) -> None:
    for d in dirs:
        if d.is_dir():
            for p in d.iterdir():
                if ".tmp-" in p.name:
                    p.unlink(missing_ok=True)


def run(listing: Listing, out: Path, settings: Settings, fmt: str, shard_size: int,
        workers: int, progress: bool = True, synth_seed: int = 0,
        ffcv_jpg: bool = False) -> dict:
    """Shard `listing` into `out`; returns the manifest."""
    want_wds, want_ffcv = fmt in ("wds", "both"), fmt in ("ffcv", "both")
    if want_ffcv:  # before any work: a missing extra is one line, not a half-done run
        from vaegan_dist.extras import require

        require("ffcv.writer", "ffcv", "--format ffcv")
    out.mkdir(parents=True, exist_ok=True)
    parts = out / PARTS
    parts.mkdir(exist_ok=True)
    tar_dir = out if want_wds else parts / "tars"  # ffcv-only: tars are an intermediate
    tar_dir.mkdir(exist_ok=True)
    _clean_tmp(out, parts, tar_dir)
    settings_d = settings.as_dict() | {"shard_size": shard_size} | order_setting(listing.kind)
    if fmt != "wds":
        settings_d["ffcv_image"] = f"jpg q{settings.quality}" if ffcv_jpg else "raw"
    tag = hashlib.sha256(json.dumps([settings_d, listing.kind, synth_seed],
                                    sort_keys=True).encode()).hexdigest()[:16]
    tasks = make_tasks(listing, settings, tar_dir, parts, shard_size, tag, synth_seed)
    bar = tqdm(total=len(tasks), desc="shards", unit="shard", disable=not progress,
               dynamic_ncols=True)
    records = []
    if workers <= 1:
        for t in tasks:
            records.append(run_task(t))
            bar.update()
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for rec in pool.imap_unordered(run_task, tasks, chunksize=1):
                records.append(rec)
                bar.update()
    bar.close()
    n_items = {(t.split, t.index): len(t.items) for t in tasks}
    records.sort(key=lambda r: (r["split"], r["index"]))
    skipped = list(listing.skipped) + [s for r in records for s in r["skipped"]]
    splits: dict = {}
    for r in records:
        sp = splits.setdefault(r["split"], {"inputs": 0, "sizes": {}})
        sp["inputs"] += n_items[(r["split"], r["index"])]
        for size, sh in r["shards"].items():
            sz = sp["sizes"].setdefault(size, {"count": 0, "shards": []})
            sz["count"] += sh["count"]
            if want_wds:
                sz["shards"].append(sh)
    if want_ffcv:
        from .beton import write_beton

        for split, sp in splits.items():
            for size, sz in sp["sizes"].items():
                name = f"{split}-{size}.beton"
                tars = [tar_dir / r["shards"][size]["name"] for r in records
                        if r["split"] == split]
                rec_p = parts / f"{name}.json"
                try:
                    rec = json.loads(rec_p.read_text())
                    ok = rec["tag"] == tag and sha256_file(out / name) == rec["sha256"]
                except (OSError, ValueError, KeyError):
                    ok = False
                if not ok:
                    n = write_beton(tars, out / name, ffcv_jpg, settings.quality,
                                    list(listing.attributes))
                    rec = {"tag": tag, "name": name, "sha256": sha256_file(out / name),
                           "count": n}
                    atomic_write(rec_p, json.dumps(rec).encode())
                sz["beton"] = {k: rec[k] for k in ("name", "sha256", "count")}
        if not want_wds:
            shutil.rmtree(tar_dir, ignore_errors=True)
    manifest = {
        "tool": "vaegan-prep", "version": __version__,
        "source": {"kind": listing.kind, "root": os.path.basename(listing.root.rstrip("/"))},
        "format": fmt, "attributes": listing.attributes,
        # after the tag: the resize of an embedded source follows from its kind already
        "settings": settings_d | ({"resize_filter": EMBEDDED_RESIZE[listing.kind]}
                                  if listing.kind in EMBEDDED_RESIZE else {}),
        "splits": splits, "num_skipped": len(skipped), "skipped": skipped,
    }
    atomic_write(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True)
                                         + "\n").encode())
    return manifest
