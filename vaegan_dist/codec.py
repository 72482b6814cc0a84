"""The image codec shared by the trainer (WebDataset decoding) and the sharding tool
(`data_prep`): encoded sample bytes <-> HxWx3 uint8 RGB.

JPEG goes through simplejpeg (libjpeg-turbo; ~3x faster than PIL at decoding, a core
dependency). Where simplejpeg cannot be imported (a platform without its wheel), PIL is
used instead: the same pixels to within JPEG's rounding, 4:4:4 chroma as well, but not
byte-identical shards (`BACKEND` says which one is in use)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    import simplejpeg
except ImportError:  # PIL fallback
    simplejpeg = None

BACKEND = "simplejpeg" if simplejpeg is not None else "pil"


def encode(arr: np.ndarray, codec: str = "jpg", quality: int = 95) -> bytes:
    """Deterministic encoding of HxWx3 uint8: JPEG 4:4:4 at `quality`, or PNG (zlib 6)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if codec == "jpg":
        if simplejpeg is not None:
            return simplejpeg.encode_jpeg(arr, quality=quality, colorspace="RGB",
                                          colorsubsampling="444")
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
        return buf.getvalue()
    if codec != "png":
        raise ValueError(f"unknown codec '{codec}' (jpg or png)")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode(data: bytes, ext: str) -> np.ndarray:
    """Encoded sample bytes -> HxWx3 uint8 RGB (`ext`: jpg, jpeg or png)."""
    if ext in ("jpg", "jpeg") and simplejpeg is not None:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
