"""vaegan-prep: round trip, CelebA layout, determinism over --workers, SIGKILL resume,
the bad-input corpus, verify."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import procs
from tests.data_helpers import (
    PREP,
    ROOT,
    class_folders,
    file_hashes,
    manifest,
    prep,
    read_tars,
    smooth_image,
)
from vaegan_dist.codec import decode


def test_help_on_every_subcommand():
    for sub in ([], ["shard"], ["synth"], ["digits"], ["mnist"], ["verify"]):
        r = procs.run([*PREP, *sub, "--help"], cwd=ROOT, timeout=120)
        assert r.returncode == 0 and "usage: vaegan-prep" in r.stdout


def test_bad_flag_is_one_line_error(tmp_path):
    r = prep("shard", str(tmp_path / "nope"), str(tmp_path / "o"), "--size", "16", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "not found" in r.stderr


def _celeba(root: Path, n: int) -> dict[str, np.ndarray]:
    (root / "img_align_celeba").mkdir(parents=True)
    names = ["Smiling", "Male"]
    lines, parts, imgs = [str(n), " ".join(names)], [], {}
    for i in range(n):
        name = f"{i + 1:06d}.png"
        imgs[name] = smooth_image(i, 178, 218)
        Image.fromarray(imgs[name]).save(root / "img_align_celeba" / name)
        lines.append(f"{name} {'1' if i % 2 else '-1'} {'1' if i % 3 == 0 else '-1'}")
        parts.append(f"{name} {0 if i < n - 2 else 1}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    return imgs


@pytest.mark.parametrize("codec,tol", [("png", 0.0), ("jpg", 4.0)])
def test_celeba_round_trip_pixels_and_attributes(tmp_path, codec, tol):
    imgs = _celeba(tmp_path / "celeba", 10)
    out = tmp_path / "out"
    prep("shard", str(tmp_path / "celeba"), str(out), "--size", "32", "--codec", codec,
         "--shard-size", "3")
    m = manifest(out)
    assert m["attributes"] == ["Smiling", "Male"] and m["settings"]["box"] == [25, 50, 153, 178]
    assert m["settings"]["resize_filter"] == "lanczos"
    assert m["splits"]["train"]["sizes"]["32"]["count"] == 8
    assert m["splits"]["valid"]["sizes"]["32"]["count"] == 2
    got = read_tars(out, "*-32-*.tar")
    assert len(got) == 10
    for _key, d in got.items():
        meta = json.loads(d["json"])
        name = meta["source"].split("/")[-1]
        i = int(name[:6]) - 1
        assert meta["attrs"] == {"Smiling": int(i % 2 == 1), "Male": int(i % 3 == 0)}
        ref = Image.fromarray(imgs[name]).crop((25, 50, 153, 178)).resize((32, 32),
                                                                         Image.LANCZOS)
        diff = np.abs(decode(d[codec], codec).astype(int) - np.asarray(ref, dtype=int))
        assert diff.mean() <= tol, (name, diff.mean())


def test_deterministic_whatever_the_worker_count(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    prep("synth", str(a), "--num", "120", "--size", "16", "--size", "24", "--shard-size", "13",
         "--workers", "1")
    prep("synth", str(b), "--num", "120", "--size", "16", "--size", "24", "--shard-size", "13",
         "--workers", "2")
    ha, hb = file_hashes(a), file_hashes(b)
    assert len(ha) == 2 * 10 + 1 and ha == hb
    assert prep("verify", str(a)).returncode == 0


def _folder(root: Path, n: int) -> None:
    for i in range(n):
        d = root / f"d{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(i, 40, 30)).save(d / f"img{i:03d}.png")


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    _folder(tmp_path / "src", 60)
    args = ["shard", str(tmp_path / "src"), "--size", "16", "--shard-size", "4", "--no-progress"]
    prep(*args[:2], str(tmp_path / "ref"), *args[2:])
    out = tmp_path / "out"
    env = dict(os.environ, VAEGAN_PREP_TASK_DELAY="0.25")
    with procs.started([*PREP, *args[:2], str(out), *args[2:]], cwd=ROOT, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as p:
        deadline = time.time() + 60
        while time.time() < deadline and len(list((out / ".parts").glob("train-*.json"))) < 4:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        procs.wait(p, timeout=60)
    done = len(list((out / ".parts").glob("train-*.json")))
    assert 4 <= done < 15 and not (out / "manifest.json").exists()
    for t in out.glob("*.tar"):  # no truncated shard under a final name
        with tarfile.open(t) as tf:
            assert len(tf.getmembers()) % 2 == 0
    r = prep(*args[:2], str(out), *args[2:])
    assert "60 inputs" in r.stdout
    assert file_hashes(out) == file_hashes(tmp_path / "ref")


def _bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_bad_input_corpus(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = {}

    def save(name, img: Image.Image, **kw):
        img.save(src / name, **kw)
        good[name] = img

    base = smooth_image(1, 48, 40)
    save("rgb.jpg", Image.fromarray(base), quality=95)
    save("gray.png", Image.fromarray(base[..., 0]))
    save("palette.png", Image.fromarray(base).convert("P"))
    save("cmyk.jpg", Image.fromarray(base).convert("CMYK"))
    save("deep16.png", Image.fromarray(base[..., 1].astype(np.uint16) * 257))
    rgba = np.dstack([base, np.where(np.arange(48)[None, :] < 24, 0, 255)
                      .repeat(40, 0).astype(np.uint8)])
    save("alpha.png", Image.fromarray(rgba, "RGBA"))
    save("tiny.bmp", Image.fromarray(smooth_image(2, 8, 8)))
    (src / "sub" / "deep").mkdir(parents=True)
    save("sub/deep/webp.webp", Image.fromarray(base))
    jpg = (src / "rgb.jpg").read_bytes()
    bad = {"truncated.jpg": jpg[: len(jpg) // 2], "empty.png": b"",
           "text.jpg": b"hello, not an image\n" * 10, "bomb.png": _bomb_png(30000, 30000),
           "garbage.png": os.urandom(2000)}
    for name, data in bad.items():
        (src / name).write_bytes(data)
    (src / "dangling.jpg").symlink_to(src / "does-not-exist.jpg")
    (src / "folder.png").mkdir()
    bad.update({"dangling.jpg": b"", "folder.png": b""})
    out = tmp_path / "out"
    prep("shard", str(src), str(out), "--size", "16", "--workers", "2", "--shard-size", "3")
    m = manifest(out)
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == set(bad), reasons
    assert "truncated" in reasons["truncated.jpg"] and "empty" in reasons["empty.png"]
    assert "bomb" in reasons["bomb.png"] or "large" in reasons["bomb.png"]
    assert "not an image" in reasons["text.jpg"] and "unreadable" in reasons["dangling.jpg"]
    got = read_tars(out, "*.tar")
    sources = {json.loads(d["json"])["source"] for d in got.values()}
    assert sources == set(good) and m["splits"]["train"]["sizes"]["16"]["count"] == len(good)
    by_src = {json.loads(d["json"])["source"]: decode(d["jpg"], "jpg") for d in got.values()}
    alpha = by_src["alpha.png"].astype(int)  # transparent left half -> white background
    assert alpha[:, :5].min() > 235 and alpha[:, -5:].mean() < 200
    assert all(v.shape == (16, 16, 3) for v in by_src.values())
    # --small skip drops the 8x8 image, with a reason
    out2 = tmp_path / "out2"
    prep("shard", str(src), str(out2), "--size", "16", "--small", "skip")
    assert "smaller" in {s["path"]: s["reason"] for s in manifest(out2)["skipped"]}["tiny.bmp"]


def test_celeba_malformed_attribute_line_is_skipped_and_named(tmp_path):
    _celeba(tmp_path / "c", 4)
    f = tmp_path / "c" / "list_attr_celeba.txt"
    lines = f.read_text().splitlines()
    lines[3] = lines[3].split()[0] + " 1"  # too few values
    f.write_text("\n".join(lines) + "\n")
    prep("shard", str(tmp_path / "c"), str(tmp_path / "o"), "--size", "16")
    m = manifest(tmp_path / "o")
    paths = {s["path"] for s in m["skipped"]}
    assert "list_attr_celeba.txt:4" in paths and "img_align_celeba/000002.png" in paths
    assert sum(sp["sizes"]["16"]["count"] for sp in m["splits"].values()) == 3


def test_verify_reports_a_corrupted_shard(tmp_path):
    out = tmp_path / "o"
    prep("synth", str(out), "--num", "20", "--size", "16", "--shard-size", "10")
    assert "0 problem" in prep("verify", str(out)).stdout
    t = out / "train-16-000001.tar"
    data = bytearray(t.read_bytes())
    data[1200] ^= 0xFF
    t.write_bytes(bytes(data))
    r = prep("verify", str(out), check=False)
    assert r.returncode == 1 and "train-16-000001.tar" in r.stdout


def _attrs_by_source(out: Path) -> dict[str, tuple[str, dict]]:
    metas = [json.loads(d["json"]) for d in read_tars(out, "*.tar").values()]
    return {m["source"]: (m["split"], m["attrs"]) for m in metas}


def test_class_folders_are_one_hot_attributes(tmp_path):
    """`shard --classes`: SRC/CLASS/* (one split) and SRC/{train,test,val}/CLASS/* (splits);
    one attribute per class, the same list in every split; a loose image is a named skip."""
    src = tmp_path / "flat"
    class_folders(src, {"zebra": 2, "cat": 3, "dog": 1})
    Image.fromarray(smooth_image(99, 20, 20)).save(src / "loose.png")
    prep("shard", str(src), str(tmp_path / "o1"), "--size", "16", "--classes")
    m = manifest(tmp_path / "o1")
    assert m["attributes"] == ["cat", "dog", "zebra"] and set(m["splits"]) == {"train"}
    assert [s["path"] for s in m["skipped"]] == ["loose.png"]
    assert "class folder" in m["skipped"][0]["reason"]
    got = _attrs_by_source(tmp_path / "o1")
    assert len(got) == 6
    for source, (split, attrs) in got.items():
        assert split == "train" and sum(attrs.values()) == 1
        assert attrs[source.split("/")[0]] == 1

    src = tmp_path / "split"
    class_folders(src, {"train/a": 3, "train/b": 2, "test/a": 1, "test/b": 1, "val/c": 1})
    prep("shard", str(src), str(tmp_path / "o2"), "--size", "16", "--classes")
    m = manifest(tmp_path / "o2")
    assert m["attributes"] == ["a", "b", "c"] and m["num_skipped"] == 0
    assert {k: v["inputs"] for k, v in m["splits"].items()} == {"train": 5, "test": 2,
                                                                 "valid": 1}
    for source, (split, attrs) in _attrs_by_source(tmp_path / "o2").items():
        top, cls = source.split("/")[:2]
        assert split == {"val": "valid"}.get(top, top) and attrs == {
            n: int(n == cls) for n in "abc"}
    # without --classes the same folder is one unlabelled split, as before
    prep("shard", str(src), str(tmp_path / "o3"), "--size", "16")
    assert manifest(tmp_path / "o3")["attributes"] == []


def test_class_folders_are_written_in_a_seeded_shuffled_order(tmp_path):
    """Path order puts one class after another, so a shard (and the few shards a reader's
    shuffle buffer mixes) would hold one or two classes: folders are written in a seeded
    random order instead, the same on every run; keys and labels are untouched."""
    src = tmp_path / "src"
    class_folders(src, {c: 6 for c in "abcd"})
    outs = [tmp_path / "o1", tmp_path / "o2"]
    for out in outs:
        prep("shard", str(src), str(out), "--size", "16", "--classes", "--shard-size", "8")
    assert file_hashes(outs[0]) == file_hashes(outs[1])
    m = manifest(outs[0])
    assert m["settings"]["order"] == "shuffled (seed 0)"
    with tarfile.open(outs[0] / "train-16-000000.tar") as tf:
        first = [json.loads(tf.extractfile(t).read()) for t in tf.getmembers()
                 if t.name.endswith(".json")]
    assert len(first) == 8 and len({f["source"].split("/")[0] for f in first}) >= 3
    got = _attrs_by_source(outs[0])  # every input once, with its own class
    assert len(got) == 24 and all(a[s.split("/")[0]] == 1 for s, (_, a) in got.items())
    # a folder without --classes is shuffled too; the embedded sets keep their order
    prep("shard", str(src), str(tmp_path / "o3"), "--size", "16")
    assert manifest(tmp_path / "o3")["settings"]["order"] == "shuffled (seed 0)"
    prep("synth", str(tmp_path / "o4"), "--num", "4", "--size", "16")
    assert manifest(tmp_path / "o4")["settings"]["order"] == "listing"


def test_shards_in_path_order_get_a_warning(tmp_path, capsys):
    """Shards of a folder made before the shuffled order: training says to re-shard."""
    from vaegan_dist.data.streaming import find_shards

    src, out = tmp_path / "src", tmp_path / "out"
    class_folders(src, {"a": 2, "b": 2})
    prep("shard", str(src), str(out), "--size", "16", "--classes")
    find_shards(str(out), "train", 16)
    assert "re-shard" not in capsys.readouterr().err
    m = manifest(out)
    del m["settings"]["order"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert len(find_shards(str(out), "train", 16)) == 1
    err = capsys.readouterr().err
    assert "path order" in err and "re-shard" in err


def test_class_folders_refused_in_one_line(tmp_path):
    class_folders(tmp_path / "one", {"only": 2})
    _celeba(tmp_path / "c", 2)
    for src, words in ((tmp_path / "one", "two or more class folders"),
                       (tmp_path / "c", "CelebA")):
        r = prep("shard", str(src), str(tmp_path / "o"), "--size", "16", "--classes",
                 check=False)
        assert r.returncode == 2 and words in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "manifest.json").exists()
