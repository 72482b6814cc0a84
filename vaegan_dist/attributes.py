"""Attribute vectors (paper sec. 5.5, Fig. 8): mean latent of images with an attribute minus
the mean of images without it; `z + w * v` edits an encoded or sampled latent.

Data with attributes comes through a tiny reader interface, `reader.names` (attribute
names) and `reader.batches(batch) -> iterator of (uint8 NHWC images, uint8 [B, A] attrs)`,
so the embedded dataset, WebDataset shards (`{key}.jpg` + `{key}.json`) and anything else
can feed it."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .data import synthetic
from .generate import Model, SnapshotError


class SyntheticAttrReader:
    """The embedded default dataset and its five attributes."""

    def __init__(self, num: int, resolution: int, seed: int = 0):
        self.images, self.attrs = synthetic.make_dataset(num, resolution, seed)
        self.names = list(synthetic.ATTRIBUTES)

    def batches(self, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(self.images), batch):
            yield self.images[i:i + batch], self.attrs[i:i + batch]


def _attr_dict(meta: dict) -> dict:
    """The attribute mapping of a shard's JSON: top level or under attributes/attrs."""
    for key in ("attributes", "attrs"):
        if isinstance(meta.get(key), dict):
            return meta[key]
    return {k: v for k, v in meta.items() if isinstance(v, (bool, int, float))}


class ShardAttrReader:
    """WebDataset tar shards (or a folder of them) with `{key}.jpg|png` and `{key}.json`;
    attribute values > 0 count as present (CelebA's -1/1 and 0/1 both work). Read with
    tarfile: no dependency, samples in shard order."""

    def __init__(self, path: str | Path, resolution: int, limit: int = 0):
        p = Path(path)
        self.files = sorted(p.glob("*.tar")) if p.is_dir() else [p]
        if not self.files or not all(f.is_file() for f in self.files):
            raise SnapshotError(f"no .tar shards at {p}")
        self.resolution, self.limit = resolution, limit
        self.names = self._names()

    def _samples(self) -> Iterator[tuple[np.ndarray, dict]]:
        from PIL import Image

        from .data.folder import center_crop_resize

        n = 0
        for shard in self.files:
            with tarfile.open(shard) as tar:
                cur: dict[str, bytes] = {}
                key = None
                for m in tar:
                    if not m.isfile():
                        continue
                    folder, _, base = m.name.rpartition("/")
                    stem, _, ext = base.partition(".")  # webdataset: key = up to the first dot
                    k = f"{folder}/{stem}"
                    if key is not None and k != key:
                        for item in self._emit(cur, Image, center_crop_resize):
                            yield item
                            n += 1
                            if self.limit and n >= self.limit:
                                return
                        cur = {}
                    key = k
                    cur[ext.lower()] = tar.extractfile(m).read()
                if cur:
                    yield from self._emit(cur, Image, center_crop_resize)

    def _emit(self, cur, Image, ccr) -> Iterator[tuple[np.ndarray, dict]]:
        img = next((cur[e] for e in ("jpg", "jpeg", "png", "webp") if e in cur), None)
        if img is None:
            return
        with Image.open(io.BytesIO(img)) as im:
            arr = np.asarray(ccr(im.convert("RGB"), self.resolution))
        yield arr, (_attr_dict(json.loads(cur["json"])) if "json" in cur else {})

    def _names(self) -> list[str]:
        for _, attrs in self._samples():
            return list(attrs)
        raise SnapshotError(f"no images in the shards at {self.files[0].parent}")

    def batches(self, batch: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        imgs, rows = [], []
        for arr, attrs in self._samples():
            imgs.append(arr)
            rows.append([1 if float(attrs.get(a, 0)) > 0 else 0 for a in self.names])
            if len(imgs) == batch:
                yield np.stack(imgs), np.array(rows, np.uint8)
                imgs, rows = [], []
        if imgs:
            yield np.stack(imgs), np.array(rows, np.uint8)


def open_reader(spec: str, resolution: int, num: int = 2048, seed: int = 0):
    """'synthetic' -> the embedded dataset; a path -> tar shards."""
    if spec == "synthetic":
        return SyntheticAttrReader(num, resolution, seed)
    return ShardAttrReader(spec, resolution)


def encode_dataset(model: Model, reader, batch: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """(posterior means [N, latent] on CPU, attributes [N, A])."""
    zs, ats = [], []
    for imgs, attrs in reader.batches(batch):
        zs.append(model.encode_u8(imgs).cpu())
        ats.append(attrs)
    if not zs:
        raise SnapshotError("the attribute data is empty")
    return torch.cat(zs), np.concatenate(ats)


def attribute_vectors(z: torch.Tensor, attrs: np.ndarray, names: list[str]
                      ) -> dict[str, torch.Tensor]:
    """v_a = mean z over images with attribute a - mean z over images without it. Attributes
    that are always or never present get no vector."""
    out = {}
    a = torch.from_numpy(np.asarray(attrs).astype(bool))
    for j, name in enumerate(names):
        pos = a[:, j]
        if pos.all() or not pos.any():
            continue
        out[name] = z[pos].mean(0) - z[~pos].mean(0)
    return out


def save_vectors(vectors: dict[str, torch.Tensor], path: str | Path, meta: dict) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in vectors.items()}, str(path),
              metadata={k: str(v) for k, v in meta.items()})
    return path


def load_vectors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def edit_latents(z: torch.Tensor, v: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """[R, N] latents -> [R * len(weights), N]: row r holds z_r + w * v for each w."""
    w = torch.tensor(weights, dtype=z.dtype, device=z.device).view(1, -1, 1)
    return (z[:, None] + w * v.to(z.device)).reshape(-1, z.shape[-1])
