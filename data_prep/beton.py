"""FFCV .beton output, built from a split's finished tar shards (so both formats hold the
same pixels). Fields: image (RGB: raw pixels by default, so the beton holds exactly the
tars' decoded pixels; `jpg=True` uses FFCV's own OpenCV JPEG, 4:2:0 chroma, which costs
~4-10 levels per pixel on small saturated images but is ~4x smaller), attrs (uint8
vector, manifest order) and index (the sample key as an integer)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np

from vaegan_dist.codec import decode


class _TarSamples:
    """Indexable view of the samples of some tar shards, decoded on access."""

    def __init__(self, tars: list[Path], names: list[str]):
        self.samples: list[tuple[bytes, str, dict]] = []
        for t in tars:
            with tarfile.open(t) as tf:
                cur: dict = {}
                for m in tf.getmembers():
                    key, ext = m.name.split(".", 1)
                    cur.setdefault(key, {})[ext] = tf.extractfile(m).read()
                for key in sorted(cur):
                    d = cur[key]
                    ext = "jpg" if "jpg" in d else "png"
                    self.samples.append((d[ext], ext, json.loads(d["json"])))
        self.names = names

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        data, ext, meta = self.samples[i]
        attrs = np.zeros(max(1, len(self.names)), dtype=np.uint8)
        a = meta.get("attrs", {})
        attrs[:len(self.names)] = [a.get(n, 0) for n in self.names]  # manifest order
        return decode(data, ext), attrs, int(meta["key"])


def write_beton(tars: list[Path], out: Path, jpg: bool, quality: int, names: list[str]) -> int:
    """Write `out` atomically; returns the number of samples."""
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.writer import DatasetWriter

    ds = _TarSamples(tars, names)
    n_attrs = len(names)
    fields = {"image": RGBImageField(write_mode="jpg" if jpg else "raw",
                                     jpeg_quality=quality),
              "attrs": NDArrayField(dtype=np.dtype("uint8"), shape=(max(1, n_attrs),)),
              "index": IntField()}
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    DatasetWriter(str(tmp), fields, num_workers=1).from_indexed_dataset(ds, chunksize=256)
    os.replace(tmp, out)
    return len(ds)
