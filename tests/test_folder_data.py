"""The folder source: images of any depth and size, unreadable files skipped with a count."""


import numpy as np
from PIL import Image

from tests import procs
from vaegan_dist.data.folder import load_folder

from .conftest import bin_path


def make_folder(root, n=6):
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True)
    for i in range(n):
        arr = rng.integers(0, 255, size=(40 + i, 50, 3), dtype=np.uint8)
        sub = root / ("a/b" if i % 2 else "a")
        Image.fromarray(arr).save(sub / f"img{i}.{'png' if i % 3 else 'jpg'}")
    (root / "a" / "broken.png").write_bytes(b"not an image")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "gray.bmp")  # grayscale -> RGB


def test_load_folder(tmp_path, capsys):
    make_folder(tmp_path)
    imgs = load_folder(str(tmp_path), 32)
    assert imgs.shape == (7, 32, 32, 3) and imgs.dtype == np.uint8
    assert "skipped 1 unreadable" in capsys.readouterr().out


def test_train_on_folder(tmp_path):
    make_folder(tmp_path / "data")
    r = procs.run([bin_path("vaegan-train"), "--config", "tiny", "--run-dir",
                   str(tmp_path / "run"), "--max-steps", "3", "--batch", "4",
                   "data.source=folder", f"data.path={tmp_path / 'data'}"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "checkpoints" / "step-000000003" / "COMPLETE").exists()


def test_missing_folder_is_one_line_error(tmp_path):
    r = procs.run([bin_path("vaegan-train"), "--config", "tiny", "--run-dir",
                   str(tmp_path / "run"), "--max-steps", "1", "data.source=folder",
                   f"data.path={tmp_path / 'nope'}"], timeout=120)
    assert r.returncode == 2 and "no images" in r.stderr
    assert "Traceback" not in r.stderr
