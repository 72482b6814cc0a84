"""The generator's weight average (train.ema_kimg, vaegan_dist/ema.py): its decay, its update
against a hand computation, and in real runs: training is untouched by it, checkpoints hold
it (exact resume), snapshots sample from it, and turning it on at resume starts it from the
checkpoint's decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests import procs
from vaegan_dist.ema import GeneratorEma

from .conftest import bin_path
from .resume_utils import assert_same_training_state, final_state, k_trajectory, run, train_cmd

K = 4
# a half-life of 8 images = 2 steps of the resume tests' batch of 4, no ramp: the average
# lags the decoder visibly within K steps
EMA = ("train.ema_kimg=0.008", "train.ema_rampup=0")


def test_decay_is_a_half_life_in_images_with_a_ramp():
    ema = GeneratorEma(nn.Linear(2, 2), half_life_kimg=1.0, rampup=0.05)
    # after 1,000 images of ramp-free averaging the old weights keep half their weight
    assert ema.decay(10**6, 1000) == pytest.approx(0.5)
    assert ema.decay(10**6, 16) == pytest.approx(0.5 ** (16 / 1000))
    # early on the half-life is 0.05 x the images seen: at 3,200 images it is 160
    assert ema.decay(3200, 16) == pytest.approx(0.5 ** (16 / 160))
    assert GeneratorEma(nn.Linear(2, 2), 1.0, 0.0).decay(16, 16) == pytest.approx(
        0.5 ** (16 / 1000))


def test_update_is_the_moving_average_in_float32():
    torch.manual_seed(0)
    dec = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).to(torch.bfloat16)
    ema = GeneratorEma(dec, half_life_kimg=0.004, rampup=0.0)
    expect = [p.detach().double().clone() for p in dec.parameters()]
    for step in range(1, 4):
        with torch.no_grad():
            for p in dec.parameters():
                p.add_(torch.randn_like(p))
            dec[1].running_mean.fill_(float(step))
        beta = 0.5 ** (4 / 4.0)  # 4 images a step, half-life 4 images
        expect = [beta * e + (1 - beta) * p.detach().double()
                  for e, p in zip(expect, dec.parameters(), strict=True)]
        ema.update(dec, 4 * step, 4)
    for e, a in zip(expect, ema.module.parameters(), strict=True):
        assert a.dtype == torch.float32  # the average is not rounded to the model's bf16
        assert torch.allclose(a.double(), e, atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, torch.full((4,), 3.0))  # buffers: copied
    assert not any(p.requires_grad for p in ema.module.parameters())


def _ok(r) -> None:
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_average_leaves_training_alone_and_resumes_exactly(tmp_path):
    """With train.ema_kimg the run trains bit for bit as without it; its checkpoint holds
    the average, and K steps + the same command again give the straight run's average."""
    plain, straight, resumed = tmp_path / "plain", tmp_path / "straight", tmp_path / "resumed"
    _ok(run(train_cmd(plain, 2 * K, overrides=("train.ema_kimg=0",))))
    _ok(run(train_cmd(straight, 2 * K, overrides=EMA)))
    _ok(run(train_cmd(resumed, K, "--ckpt-every", "3", overrides=EMA)))
    _ok(run(train_cmd(resumed, 2 * K, "--ckpt-every", "3", overrides=EMA)))
    sp, ss, sr = final_state(plain), final_state(straight), final_state(resumed)
    assert_same_training_state(sp, ss)
    assert k_trajectory(plain) == k_trajectory(straight)
    assert "ema" not in sp and set(ss["ema"]) == set(ss["models"]["decoder"])
    assert_same_training_state(ss, sr)
    for name, t in ss["ema"].items():
        assert torch.equal(t, sr["ema"][name]), name
    # the average lags the decoder it follows
    assert any(not torch.equal(t, ss["models"]["decoder"][n]) for n, t in ss["ema"].items())


def test_snapshot_samples_from_the_average_unless_asked_not_to(tmp_path):
    from vaegan_dist.generate import load_model

    _ok(run(train_cmd(tmp_path, K, overrides=EMA)))
    state = final_state(tmp_path)
    avg, raw = load_model(tmp_path), load_model(tmp_path, ema=False)
    for name, t in avg.decoder.state_dict().items():
        assert torch.equal(t, state["ema"][name]), name
    for name, t in raw.decoder.state_dict().items():
        assert torch.equal(t, state["models"]["decoder"][name]), name
    z = avg.z(8, seed=3)
    assert avg.ema and not raw.ema
    assert not torch.equal(avg.decode(z), raw.decode(z))
    # the command line: the average by default, --no-ema the trained decoder
    grids = {}
    for flag in ("", "--no-ema"):
        out = tmp_path / f"grid{flag}.png"
        r = procs.run([bin_path("vaegan-sample"), "--run", str(tmp_path), "--n", "4", "--out",
                       str(out), "--device", "cpu", *([flag] if flag else [])], timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("weight-averaged generator" in r.stdout) == (not flag), r.stdout
        grids[flag] = np.asarray(Image.open(out))
    assert not np.array_equal(grids[""], grids["--no-ema"])


def test_turned_on_at_resume_it_starts_from_the_decoder(tmp_path):
    _ok(run(train_cmd(tmp_path, K, overrides=("train.ema_kimg=0",))))
    before = final_state(tmp_path)
    r = run(train_cmd(tmp_path, K + 1, overrides=EMA))
    _ok(r)
    assert "the checkpoint holds no generator average; it starts from the checkpoint's " \
           "decoder" in r.stdout
    after = final_state(tmp_path)
    # one update from the old decoder: beta old + (1 - beta) new, beta = 0.5 ** (4 / 8)
    beta = 0.5 ** 0.5
    for name, new in after["models"]["decoder"].items():
        if new.is_floating_point():
            expect = beta * before["models"]["decoder"][name] + (1 - beta) * new
            assert torch.allclose(after["ema"][name], expect, atol=1e-6), name
