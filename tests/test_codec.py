"""The shared image codec (vaegan_dist/codec.py): simplejpeg, and the PIL fallback used
where simplejpeg cannot be imported."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data_helpers import smooth_image
from vaegan_dist import codec


@pytest.mark.parametrize("backend", ["simplejpeg", "pil"])
def test_round_trip(backend, monkeypatch):
    if backend == "pil":
        monkeypatch.setattr(codec, "simplejpeg", None)
    img = smooth_image(3, 48, 40)
    png = codec.encode(img, "png")
    assert np.array_equal(codec.decode(png, "png"), img)  # lossless
    jpg = codec.encode(img, "jpg", quality=95)
    assert jpg[:2] == b"\xff\xd8"
    back = codec.decode(jpg, "jpg")
    assert back.shape == img.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - img).mean() < 2.0  # 4:4:4 at q95: small error
    with pytest.raises(ValueError, match="unknown codec"):
        codec.encode(img, "webp")


def test_backends_read_each_other():
    img = smooth_image(5, 32, 32)
    if codec.simplejpeg is None:
        pytest.skip("simplejpeg is not installed")
    a = codec.encode(img, "jpg")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(codec, "simplejpeg", None)
        b = codec.encode(img, "jpg")
        via_pil = codec.decode(a, "jpg")
    assert np.abs(codec.decode(b, "jpg").astype(int) - via_pil).mean() < 2.0
