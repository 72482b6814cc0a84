"""Attribute vectors move decoded images towards the attribute (paper Fig. 8), on the
embedded dataset; the shard reader; interpolation maths."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from vaegan_dist.attributes import (
    ShardAttrReader,
    SyntheticAttrReader,
    attribute_vectors,
    edit_latents,
    encode_dataset,
)
from vaegan_dist.generate import interpolate, lerp, load_model, slerp
from vaegan_dist.images import to_uint8

STEPS = 100  # checked (seeds 0, 1, 2): 100 tiny steps learn the background attribute


def border_brightness(u8: np.ndarray) -> np.ndarray:
    """A simple `bright_bg` detector: mean grey level of the 3-pixel image border."""
    f = u8.astype(np.float32).mean(-1) / 255
    parts = [f[:, :3], f[:, -3:], f[:, 3:-3, :3], f[:, 3:-3, -3:]]
    return np.concatenate([p.reshape(len(f), -1) for p in parts], 1).mean(1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from vaegan_dist.config import build_config
    from vaegan_dist.train import train

    d = tmp_path_factory.mktemp("attrs") / "run"
    train(build_config("tiny", [f"run_dir={d}", f"train.kimg={STEPS * 16 / 1000}",
                                "train.threads=1", "train.log_every_kimg=0.8",
                                "train.image_every_kimg=0"]))
    return load_model(d)


def test_attribute_vector_raises_detector_above_chance(model):
    reader = SyntheticAttrReader(512, 32, seed=0)
    z, attrs = encode_dataset(model, reader)
    vecs = attribute_vectors(z, attrs, reader.names)
    j = reader.names.index("bright_bg")
    # the detector, fitted on real data: threshold halfway between the class means
    s = border_brightness(reader.images)
    thr = (s[attrs[:, j] == 1].mean() + s[attrs[:, j] == 0].mean()) / 2
    assert ((s > thr) == attrs[:, j]).mean() > 0.95
    dark = z[attrs[:, j] == 0][:100]
    before = (border_brightness(to_uint8(model.decode(dark))) > thr).mean()
    after = (border_brightness(to_uint8(model.decode(dark + vecs["bright_bg"]))) > thr).mean()
    assert before < 0.5 < after, (before, after)  # edited dark images are detected bright
    # on sampled latents too: +v brighter than -v
    zs = model.z(100, seed=1)
    up = border_brightness(to_uint8(model.decode(zs + vecs["bright_bg"]))).mean()
    down = border_brightness(to_uint8(model.decode(zs - vecs["bright_bg"]))).mean()
    assert up > thr > down


def _shard(path, start: int, n: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            img = Image.new("RGB", (40, 40), (250, 10, 10) if i % 2 else (10, 10, 250))
            buf = io.BytesIO()
            img.save(buf, format="JPEG")
            meta = json.dumps({"attributes": {"red": 1 if i % 2 else -1, "big": -1}}).encode()
            for ext, data in (("jpg", buf.getvalue()), ("json", meta)):
                info = tarfile.TarInfo(f"{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_shard_reader_feeds_attribute_vectors(tmp_path):
    _shard(tmp_path / "a-000000.tar", 0, 5)
    _shard(tmp_path / "a-000001.tar", 5, 4)
    reader = ShardAttrReader(tmp_path, 32)
    assert reader.names == ["red", "big"]
    batches = list(reader.batches(4))
    imgs = np.concatenate([b[0] for b in batches])
    attrs = np.concatenate([b[1] for b in batches])
    assert imgs.shape == (9, 32, 32, 3) and attrs.shape == (9, 2)
    assert attrs[:, 0].tolist() == [i % 2 for i in range(9)] and attrs[:, 1].sum() == 0
    assert (imgs[attrs[:, 0] == 1, ..., 0] > 200).all()  # the red ones are red
    z = torch.from_numpy(imgs.reshape(9, -1)[:, :4].astype(np.float32))
    vecs = attribute_vectors(z, attrs, reader.names)
    assert list(vecs) == ["red"]  # `big` is never present: no vector
    expected = z[attrs[:, 0] == 1].mean(0) - z[attrs[:, 0] == 0].mean(0)
    torch.testing.assert_close(vecs["red"], expected)


def test_edit_latents_layout():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    v = torch.tensor([1.0, -1.0])
    e = edit_latents(z, v, [-1, 0, 2])
    assert e.tolist() == [[-1, 1], [0, 0], [2, -2], [0, 2], [1, 1], [3, -1]]


def test_interpolation_endpoints_and_sphere():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    for mode in ("lerp", "slerp"):
        path = interpolate(z0, z1, 7, mode).view(3, 7, 16)
        torch.testing.assert_close(path[:, 0], z0)
        torch.testing.assert_close(path[:, -1], z1)
    t = torch.tensor(0.5)
    torch.testing.assert_close(lerp(z0, z1, t), (z0 + z1) / 2)
    a = torch.tensor([[2.0, 0.0]])
    b = torch.tensor([[0.0, 2.0]])
    mid = slerp(a, b, t)  # on the circle of radius 2, at 45 degrees
    torch.testing.assert_close(mid, torch.tensor([[2 ** 0.5, 2 ** 0.5]]))
    torch.testing.assert_close(slerp(a, a, t), a)  # parallel endpoints fall back to lerp


def test_snapshot_of_a_began_model_samples_but_cannot_encode(tmp_path):
    from safetensors.torch import save_file

    from vaegan_dist.config import build_config, dump_yaml
    from vaegan_dist.generate import SnapshotError
    from vaegan_dist.models import build_models

    cfg = build_config("tiny", ["loss.variant=began"])
    models = build_models(cfg.model, vae=False)
    weights = {f"{n}.{k}": v.contiguous() for n, m in models.items()
               for k, v in m.state_dict().items()}
    save_file(weights, str(tmp_path / "w.safetensors"), metadata={"config": dump_yaml(cfg)})
    m = load_model(tmp_path / "w.safetensors")
    assert m.encoder is None and m.sample(3, seed=1).shape == (3, 3, 32, 32)
    torch.testing.assert_close(m.sample(3, seed=1), m.sample(3, seed=1))
    with pytest.raises(SnapshotError, match="no encoder"):
        m.encode(torch.zeros(1, 3, 32, 32))
    save_file(weights, str(tmp_path / "bare.safetensors"))  # no config metadata
    with pytest.raises(SnapshotError, match="config"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "run").mkdir()
    with pytest.raises(SnapshotError, match="no complete checkpoint"):
        load_model(tmp_path / "run")
