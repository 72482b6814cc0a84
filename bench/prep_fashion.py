"""Fashion-MNIST as a folder of class folders, for `bench/fidelity.py --data FOLDER`: a real
labelled set that is not digits, of the size and kind of issue 12's GPU measurement (10
classes of 28x28 grey images), with its own train/test split.

    .venv/bin/python bench/prep_fashion.py [--idx DIR] [OUT]   (default runs/fidelity/fashion-mnist)

DIR holds the four IDX files of Xiao et al. 2017 (train-images-idx3-ubyte.gz, ...), as
Debian's package `dataset-fashion-mnist` installs them under /usr/share/datasets/fashion-mnist
(the default). Without root: `apt-get download dataset-fashion-mnist && dpkg -x *.deb X`, then
`--idx X/usr/share/datasets/fashion-mnist`. Any set in that format (MNIST, KMNIST) works too;
the class names are then Fashion-MNIST's.

Written: OUT/train/CLASS/NNNNN.png (60,000) and OUT/test/CLASS/NNNNN.png (10,000), then
OUT/DONE (bench/prep_animals.py's layout and write-aside-then-rename)."""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prep_animals import ROOT, report, write_folders  # noqa: E402

DEFAULT_IDX = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot")  # labels 0..9 (Xiao et al. 2017, Table 1)
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One gzipped IDX array of uint8 (magic 0x0000_08_NN, NN = ndim), checked against its
    header: a truncated or foreign file is a ValueError naming it."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\0\0\x08" or raw[3] != ndim:
        raise ValueError(f"{path}: not a uint8 IDX file of {ndim} dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise ValueError(f"{path}: {len(body)} bytes of data, its header says {shape}")
    return np.frombuffer(body, np.uint8).reshape(shape)


def load(idx: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 [N, 28, 28], int64 [N])}, labels 0..9, or a one-line error."""
    out = {}
    for split, (images, labels) in FILES.items():
        if not (idx / images).is_file() or not (idx / labels).is_file():
            raise FileNotFoundError(f"{idx}: no {images} / {labels} (see --help: Debian's "
                                    f"dataset-fashion-mnist)")
        xs, ys = read_idx(idx / images, 3), read_idx(idx / labels, 1).astype(np.int64)
        if xs.shape[1:] != (28, 28) or len(ys) != len(xs) or ys.max(initial=0) >= len(CLASSES):
            raise ValueError(f"{idx}: {split}: images {xs.shape}, labels {ys.shape} "
                             f"(max {ys.max(initial=0)}); expected 28x28, labels 0..9")
        out[split] = xs, ys
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default=str(ROOT / "runs" / "fidelity" / "fashion-mnist"))
    p.add_argument("--idx", default=str(DEFAULT_IDX), help="folder of the four .gz IDX files")
    a = p.parse_args(argv)
    return report("prep_fashion", lambda: write_folders(Path(a.out), lambda: load(Path(a.idx)),
                                                        CLASSES), CLASSES)


if __name__ == "__main__":
    sys.exit(main())
