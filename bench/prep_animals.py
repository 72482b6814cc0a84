"""Animal-MNIST as a folder of class folders, for `bench/fidelity.py --data FOLDER`: a third
real labelled set beside scikit-learn's digits and MNIST, and one that is not digits at all.

    .venv/bin/python bench/prep_animals.py [OUT]     (default runs/fidelity/animal-mnist)

The PyPI package `animal-mnist` 0.4 (MIT; S. Mohammadi, Tohoku University) ships in its
wheel 10,000 28x28 grey silhouettes of 10 animals (bear, bird, cat, cow, dog, elephant,
giraffe, horse, sheep, zebra; 1,000 each), white on black, as two gzipped pickles of numpy
arrays. Install it WITH --no-deps (`pip install --no-deps animal-mnist==0.4`): its metadata
requires tensorflow and pandas, which the data files do not need; the files are located
without importing the package (its loader imports tensorflow).

Written: OUT/train/CLASS/NNNNN.png and OUT/test/CLASS/NNNNN.png, every sixth image of a
class (by index) in `test` (1,660 images), the rest in `train` (8,340), then OUT/DONE. The
set has no split of its own; the test split gives the benchmark its real row and the
classifier's held-out accuracy."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install --no-deps animal-mnist==0.4"
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
           "zebra")  # labels 0..9, the package's order (its README)


def data_files() -> tuple[Path, Path]:
    """(images, labels) .gz inside the installed package, or a one-line error."""
    spec = importlib.util.find_spec("animal_mnist")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        d = Path(folder) / "data" / "Animal_MNIST"
        files = d / "animal_data_version_3.gz", d / "animal_label_version_3.gz"
        if all(f.is_file() for f in files):
            return files
    raise FileNotFoundError(f"Animal-MNIST needs the PyPI package animal-mnist (its wheel "
                            f"holds the images): {INSTALL}")


def load() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 28, 28], int64 [N]) with every label 0..9 present (N = 10,000 in 0.4)."""
    xs_f, ys_f = data_files()
    with gzip.open(xs_f, "rb") as f:
        xs = np.asarray(pickle.load(f))  # the package's own files, not user data
    with gzip.open(ys_f, "rb") as f:
        ys = np.asarray(pickle.load(f)).astype(np.int64)
    if xs.ndim != 3 or xs.shape[1:] != (28, 28) or xs.dtype != np.uint8 \
            or ys.shape != xs.shape[:1] or set(np.unique(ys).tolist()) != set(range(10)):
        raise ValueError(f"{xs_f}: expected uint8 28x28 images, one label 0..9 each, got "
                         f"images {xs.shape} {xs.dtype}, labels {ys.shape} "
                         f"{np.unique(ys)[:12]}")
    return xs, ys


def split(xs: np.ndarray, ys: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every sixth image of a class (by index) to `test`, the rest to `train`."""
    rank = np.empty(len(ys), np.int64)
    for c in np.unique(ys):
        rank[ys == c] = np.arange(int((ys == c).sum()))
    test = rank % 6 == 5
    return {"train": (xs[~test], ys[~test]), "test": (xs[test], ys[test])}


def write_folders(out: Path, load_splits: Callable[[], dict[str, tuple[np.ndarray, np.ndarray]]],
                  classes: tuple[str, ...]) -> Path:
    """Write OUT/SPLIT/CLASS/NNNNN.png once (aside, then renamed into place, DONE last), NNNNN
    the image's index in its split; reuse a complete folder without loading anything."""
    from PIL import Image

    if (out / "DONE").is_file():
        return out
    splits = load_splits()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, (xs, ys) in splits.items():
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            d = tmp / name / classes[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x).save(d / f"{i:05d}.png")
    (tmp / "DONE").write_text(f"{sum(len(ys) for _, ys in splits.values())}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def export(out: Path) -> Path:
    return write_folders(out, lambda: split(*load()), CLASSES)


def report(prog: str, write: Callable[[], Path], classes: tuple[str, ...]) -> int:
    """Run `write` (a write_folders call), then say what the folder holds; a bad input or a
    failed write is one line on stderr and exit status 2 (the shared tail of the prep scripts)."""
    try:
        out = write()
    except (OSError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    n = {s: sum(1 for _ in (out / s).rglob("*.png")) for s in ("train", "test")}
    print(f"{out}: train {n['train']}, test {n['test']} images in {len(classes)} classes")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default=str(ROOT / "runs" / "fidelity" / "animal-mnist"))
    a = p.parse_args(argv)
    return report("prep_animals", lambda: export(Path(a.out)), CLASSES)


if __name__ == "__main__":
    sys.exit(main())
