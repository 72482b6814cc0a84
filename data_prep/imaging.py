"""Turn one input file into RGB uint8 arrays at each target size, or a one-line reason to
skip it. Every conversion is explicit so the output is the same on every machine."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from vaegan_dist import codec

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is skipped, never half-kept


class Skip(Exception):
    """An input that cannot be used; the message is the reason written to the manifest."""


@dataclass(frozen=True)
class Settings:
    """Crop/resize/encode flags; part of the manifest and of the resume check."""

    sizes: tuple[int, ...]
    codec: str = "jpg"  # jpg | png
    quality: int = 95
    box: tuple[int, int, int, int] | None = None  # fixed crop box (CelebA face crop)
    background: tuple[int, int, int] = (255, 255, 255)  # alpha is composited on this
    small: str = "upscale"  # upscale | skip: images smaller than the largest size
    max_pixels: int = 64_000_000  # larger images are refused (decompression bombs)

    def as_dict(self) -> dict:
        return {"sizes": list(self.sizes), "codec": self.codec, "quality": self.quality,
                "crop": "box" if self.box else "centre-square",
                "box": list(self.box) if self.box else None,
                "background": list(self.background), "small": self.small,
                "resize_filter": "lanczos", "max_pixels": self.max_pixels}


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> RGB: 16/32-bit scaled to 8 bits, alpha composited on `background`."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        bg = Image.new("RGBA", img.size, (*background, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def crop_resize(img: Image.Image, s: Settings, size: int) -> np.ndarray:
    if s.box is not None:
        img = img.crop(s.box)
    else:
        w, h = img.size
        m = min(w, h)
        left, top = (w - m) // 2, (h - m) // 2
        img = img.crop((left, top, left + m, top + m))
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def load(data: bytes, s: Settings) -> dict[int, np.ndarray]:
    """Decode `data` and return {size: HxWx3 uint8}; raises Skip with the reason."""
    if not data:
        raise Skip("empty file")
    Image.MAX_IMAGE_PIXELS = s.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > s.max_pixels:
                    raise Skip(f"too large ({im.width}x{im.height} > {s.max_pixels} pixels)")
                im.load()
                rgb = to_rgb(im, s.background)
    except Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise Skip(f"decompression bomb ({e})") from e
    except Image.UnidentifiedImageError as e:
        raise Skip("not an image") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise Skip(f"corrupt or truncated ({str(e).splitlines()[0][:120]})") from e
    w, h = rgb.size
    side = min(s.box[2] - s.box[0], s.box[3] - s.box[1]) if s.box else min(w, h)
    if s.box and (s.box[2] > w or s.box[3] > h):
        raise Skip(f"smaller ({w}x{h}) than the crop box {list(s.box)}")
    if side < max(s.sizes) and s.small == "skip":
        raise Skip(f"smaller ({w}x{h}) than the target size {max(s.sizes)}")
    return {size: crop_resize(rgb, s, size) for size in s.sizes}


def encode(arr: np.ndarray, s: Settings) -> bytes:
    """Deterministic encoding at the settings' codec and quality (vaegan_dist.codec)."""
    return codec.encode(arr, s.codec, s.quality)
