"""Streaming loaders: epoch coverage, 2 ranks x 2 workers disjointness (gloo), truncated
shard, exact resume, FFCV, and an end-to-end vaegan-train run on shards."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from tests import procs
from tests.data_helpers import ROOT, manifest, prep, read_tars
from vaegan_dist.codec import decode
from vaegan_dist.config import build_config
from vaegan_dist.data import build_source
from vaegan_dist.data.streaming import find_shards
from vaegan_dist.data.synthetic import attributes
from vaegan_dist.data.wds_stream import ShardStream


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    prep("synth", str(out), "--num", "203", "--size", "32", "--shard-size", "10",
         "--format", "both" if _has_ffcv() else "wds")
    return out


def _has_ffcv() -> bool:
    try:
        import ffcv.loader  # noqa: F401
        return True
    except Exception:
        return False


def _keys(stream: ShardStream, workers: int) -> list[tuple[int, str]]:
    dl = DataLoader(stream, batch_size=None, num_workers=workers)
    return [(w, k) for _imgs, keys, w, _e in dl for k in keys]


def test_one_epoch_every_image_once_pixels_and_attrs(shards):
    urls = find_shards(str(shards), "train", 32)
    stream = ShardStream(urls, batch=7, seed=3, shuffle_buffer=50, epochs=1)
    tars = read_tars(shards, "train-32-*.tar")
    seen = []
    for imgs, keys, _w, errors in DataLoader(stream, batch_size=None, num_workers=0):
        assert errors == 0 and imgs.dtype == torch.uint8 and imgs.shape[1:] == (32, 32, 3)
        for img, k in zip(imgs.numpy(), keys, strict=True):
            assert np.array_equal(img, decode(tars[k]["jpg"], "jpg"))
            meta = json.loads(tars[k]["json"])
            assert meta["attrs"] == attributes(int(k), 0)
            seen.append(k)
    assert sorted(seen) == sorted(tars) and len(seen) == 203
    # shuffled, and the same order again for the same (seed, epoch)
    assert seen != sorted(seen)
    again = [k for _i, ks, _w, _e in DataLoader(stream, batch_size=None) for k in ks]
    assert again == seen


def _rank_main(rank: int, world: int, port: int, urls, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    stream = ShardStream(urls, batch=4, seed=11, rank=torch.distributed.get_rank(),
                         world=torch.distributed.get_world_size(), shuffle_buffer=20,
                         epochs=1)
    got = _keys(stream, 2)
    Path(out, f"rank{rank}.json").write_text(json.dumps(got))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.dist
@pytest.mark.slow
def test_two_ranks_two_workers_disjoint_and_complete(shards, tmp_path):
    urls = find_shards(str(shards), "train", 32)
    mp.start_processes(_rank_main, args=(2, procs.free_port(), urls, str(tmp_path)),
                       nprocs=2, start_method="spawn")
    streams: dict[tuple[int, int], list[str]] = {}
    for r in range(2):
        for w, k in json.loads((tmp_path / f"rank{r}.json").read_text()):
            streams.setdefault((r, w), []).append(k)
    assert len(streams) == 4 and all(streams.values())
    allkeys = [k for v in streams.values() for k in v]
    assert len(allkeys) == len(set(allkeys)) == 203  # disjoint, and the whole set


def test_truncated_shard_is_skipped_and_counted(shards, tmp_path, capfd):
    urls = find_shards(str(shards), "train", 32)
    bad = tmp_path / "bad.tar"
    data = Path(urls[3][0]).read_bytes()
    bad.write_bytes(data[: len(data) // 2 + 100])
    urls = [*urls[:3], (str(bad), urls[3][1]), *urls[4:]]
    stream = ShardStream(urls, batch=8, seed=0, shuffle_buffer=10, epochs=1)
    seen, errors = [], 0
    for _imgs, keys, _w, e in DataLoader(stream, batch_size=None, num_workers=0):
        seen += keys
        errors = e
    assert errors >= 1 and "skipping corrupt shard" in capfd.readouterr().err
    assert 203 - 10 < len(seen) < 203 and len(seen) == len(set(seen))


def _cfg(shards: Path, source: str, *extra: str):
    return build_config("tiny", [f"data.source={source}", f"data.path={shards}",
                                 "train.batch=6", "train.accum=2",
                                 "data.shuffle_buffer=30", *extra])


def test_wds_source_resume_replays_exactly(shards, capfd):
    cfg = _cfg(shards, "wds", "data.workers=2")
    src = build_source(cfg, 1, 0, torch.device("cpu"))
    run = [src.micro_batches(s) for s in range(45)]  # 540 images: crosses 2 epochs
    assert all(b.shape == (6, 3, 32, 32) and b.min() >= -1 and b.max() <= 1
               for mb in run for b in mb)
    resumed = build_source(cfg, 1, 0, torch.device("cpu"))
    resumed.load_state_dict(src.state_dict())
    assert "warning" not in capfd.readouterr().err  # same settings: an exact replay
    for s in (20, 21, 40):
        assert all(torch.equal(a, b) for a, b in zip(run[s], resumed.micro_batches(s),
                                                     strict=True))


def test_source_warns_when_resumed_under_other_settings(shards, capfd):
    """The state a source saves is the settings its order depends on: resuming under other
    ones (here two loader workers instead of one) is said, once, on rank 0."""
    saved = build_source(_cfg(shards, "wds", "data.workers=1"), 1, 0, torch.device("cpu"))
    other = build_source(_cfg(shards, "wds", "data.workers=2"), 1, 0, torch.device("cpu"))
    other.load_state_dict(saved.state_dict())
    err = capfd.readouterr().err
    assert "data settings changed since the checkpoint (workers 1 -> 2)" in err
    rank1 = build_source(_cfg(shards, "wds", "data.workers=2"), 2, 1, torch.device("cpu"))
    rank1.load_state_dict(saved.state_dict())
    assert "warning" not in capfd.readouterr().err  # rank 0 speaks for all


def test_wds_source_resampled_runs_and_errors_are_clear(shards):
    src = build_source(_cfg(shards, "wds", "data.resampled=true"), 4, 1, torch.device("cpu"))
    assert src.micro_batches(0)[0].shape == (6, 3, 32, 32)
    with pytest.raises(ValueError, match="no 64px shards"):
        build_source(_cfg(shards, "wds", "model.resolution=64"), 1, 0, torch.device("cpu"))


@pytest.mark.skipif(not _has_ffcv(), reason="ffcv is not importable (optional extra 'ffcv': "
                                            "bash scripts/optional.sh .venv)")
def test_ffcv_loader_epoch_and_resume(shards):
    from vaegan_dist.data.ffcv_loader import make_loader

    loader = make_loader(str(shards / "train-32.beton"), 10, 1, seed=0, drop_last=False)
    tars = read_tars(shards, "train-32-*.tar")
    idx = []
    for imgs, attrs, index in loader:
        for img, a, i in zip(imgs.numpy(), attrs.numpy(), index.numpy()[:, 0], strict=True):
            k = f"{i:08d}"
            ref = decode(tars[k]["jpg"], "jpg")
            assert np.array_equal(img, ref)  # the beton stores the tars' decoded pixels
            assert list(a) == list(attributes(int(i), 0).values())
            idx.append(int(i))
    assert sorted(idx) == list(range(203))
    cfg = _cfg(shards, "ffcv")
    src = build_source(cfg, 1, 0, torch.device("cpu"))
    run = [src.micro_batches(s) for s in range(20)]
    resumed = build_source(cfg, 1, 0, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(run[18], resumed.micro_batches(18),
                                                 strict=True))


def test_end_to_end_train_on_shards(tmp_path):
    """Train on shards; resume under other loader settings: the data source's state in the
    checkpoint makes the resume say that the data order is re-derived, not replayed."""
    out = tmp_path / "shards"
    prep("synth", str(out), "--num", "64", "--size", "32", "--shard-size", "16")

    def train(steps: int, workers: int):
        return procs.run([sys.executable, "-m", "vaegan_dist.cli.train", "--config", "tiny",
                          "--run-dir", str(tmp_path / "run"), "--max-steps", str(steps),
                          "data.source=wds", f"data.path={out}", f"data.workers={workers}"],
                         cwd=ROOT, timeout=300)

    r = train(5, 1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data settings changed" not in r.stderr
    r = train(7, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    assert "warning: data settings changed since the checkpoint (workers 1 -> 2)" in r.stderr


def test_digits_shards_real_images_and_train(tmp_path):
    """`vaegan-prep digits`: every bundled digit once, pixel-equal (png), one-hot labels,
    and the trainer runs on them (the whole pipeline on real images)."""
    from vaegan_dist.features import digits_images

    out = tmp_path / "digits"
    prep("digits", str(out), "--size", "32", "--codec", "png", "--shard-size", "500")
    assert manifest(out)["settings"]["resize_filter"] == "bilinear (8x8 source)"
    got = read_tars(out, "train-32-*.tar")
    imgs, labels = digits_images(32)
    assert len(got) == len(imgs) == 1797
    for i in (0, 1, 900, 1796):
        s = got[f"{i:08d}"]
        assert np.array_equal(decode(s["png"], "png"), imgs[i])
        attrs = json.loads(s["json"])
        attrs = attrs.get("attrs", attrs)
        assert attrs[f"digit_{labels[i]}"] == 1 and sum(attrs.values()) == 1
    r = procs.run([sys.executable, "-m", "vaegan_dist.cli.train", "--config", "tiny",
                   "--run-dir", str(tmp_path / "run"), "--max-steps", "3",
                   "data.source=wds", f"data.path={out}", "model.resolution=32"],
                  cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
