"""Helpers shared by the data tests: tiny image sets made on the fly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from tests import procs

ROOT = Path(__file__).resolve().parents[1]
PREP = [sys.executable, "-m", "data_prep.cli"]


def smooth_image(i: int, w: int, h: int) -> np.ndarray:
    """A smooth, distinct RGB image (JPEG-friendly, so codec tolerance stays small)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(i)
    a, b, c = rng.uniform(0.02, 0.2, size=3)
    img = np.stack([128 + 100 * np.sin(a * xx + i), 128 + 100 * np.cos(b * yy),
                    128 + 100 * np.sin(c * (xx + yy))], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def prep(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    r = procs.run([*PREP, *args, "--no-progress"] if args[0] != "verify" else [*PREP, *args],
                  cwd=ROOT, env=e, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"vaegan-prep {args} failed: {r.stderr[-2000:]}")
    return r


def read_tars(out: Path, pattern: str) -> dict[str, dict]:
    """key -> {ext: bytes} over the tars matching pattern."""
    got: dict[str, dict] = {}
    for t in sorted(out.glob(pattern)):
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                key, _, ext = m.name.partition(".")
                got.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return got


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def file_hashes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def class_folders(root: Path, layout: dict[str, int]) -> None:
    """Class folders of small PNGs; layout: relative class folder -> number of images."""
    from PIL import Image

    for i, (rel, n) in enumerate(sorted(layout.items())):
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(smooth_image(10 * i + j, 20, 20)).save(d / f"im{j}.png")
