"""Export a split's tar shards as a plain folder of JPEG files (the ImageFolder baseline
reads the very same bytes)."""

from __future__ import annotations

import tarfile
from pathlib import Path


def export_folder(shards: list[tuple[str, int]], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path, _n in shards:
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".jpg"):
                    (folder / m.name).write_bytes(tf.extractfile(m).read())
