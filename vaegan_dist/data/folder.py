"""A folder of images (any depth) loaded into memory: centre-crop, resize, RGB. For large
sets shard them with `vaegan-prep shard` and use the WebDataset or FFCV source instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img.resize((size, size), Image.LANCZOS)


def load_folder(path: str, resolution: int) -> np.ndarray:
    """All readable images under `path` (sorted by path), uint8 NHWC. Unreadable files are
    skipped and counted in a warning."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in EXTS)
    if not files:
        raise FileNotFoundError(f"no images (jpg/jpeg/png/webp/bmp) under {path}")
    out, skipped = [], 0
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(np.asarray(center_crop_resize(im.convert("RGB"), resolution)))
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped += 1
    if skipped:
        print(f"warning: skipped {skipped} unreadable image(s) under {path}", flush=True)
    if not out:
        raise FileNotFoundError(f"no readable images under {path}")
    return np.stack(out)
