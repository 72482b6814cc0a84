"""Exact resume: 2K steps in one go == K steps, stop, same command again to 2K: identical
weights, optimiser states, controller/lr state and k_t trajectory (bitwise)."""

from __future__ import annotations

import pytest

from .resume_utils import assert_same_training_state, final_state, k_trajectory, run, train_cmd

K = 4


def _straight_and_resumed(tmp_path, nproc: int):
    a, b = tmp_path / "straight", tmp_path / "resumed"
    r = run(train_cmd(a, 2 * K, "--ckpt-every", "3", nproc=nproc))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(train_cmd(b, K, "--ckpt-every", "3", nproc=nproc))
    assert r.returncode == 0, r.stderr[-3000:]
    assert final_state(b)["progress"]["step"] == K
    r = run(train_cmd(b, 2 * K, "--ckpt-every", "3", nproc=nproc))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {b}/checkpoints/step-{K:09d}" in r.stdout
    # --max-steps stands for images: K steps of 4 images on each of nproc ranks
    assert (f"config change accepted on resume: train.kimg: {K * 4 * nproc / 1000!r} -> "
            f"{2 * K * 4 * nproc / 1000!r}") in r.stdout
    return a, b


def _check(a, b) -> None:
    sa, sb = final_state(a), final_state(b)
    assert sa["progress"]["step"] == sb["progress"]["step"] == 2 * K
    assert_same_training_state(sa, sb)
    ka, kb = k_trajectory(a), k_trajectory(b)
    assert sorted(ka) == list(range(1, 2 * K + 1)) and ka == kb
    assert len(set(ka.values())) > 1  # k really moves, so the comparison means something


def test_exact_resume_single_process(tmp_path):
    _check(*_straight_and_resumed(tmp_path, 1))


@pytest.mark.dist
@pytest.mark.slow
def test_exact_resume_two_gloo_processes(tmp_path):
    a, b = _straight_and_resumed(tmp_path, 2)
    _check(a, b)
    # every rank wrote (only) its own RNG file into the shared folder
    names = sorted(p.name for p in (b / "checkpoints" / f"step-{2 * K:09d}").iterdir())
    assert names == ["COMPLETE", "checksums.json", "rng-rank0.pt", "rng-rank1.pt", "state.pt",
                     "weights.safetensors"]


@pytest.mark.dist
@pytest.mark.slow
def test_resume_with_another_world_size(tmp_path):
    """2 processes -> 1: models, optimisers, controller carry over; data order re-derived;
    the image count goes on (K steps of 2 x 4 images, then 2 steps of 4 more)."""
    run_dir = tmp_path / "r"
    r = run(train_cmd(run_dir, K, nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    before = final_state(run_dir)
    assert before["progress"]["nimg"] == K * 8
    r = run(train_cmd(run_dir, None, overrides=(f"train.kimg={(K * 8 + 2 * 4) / 1000}",)))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2 -> 1" in r.stdout
    after = final_state(run_dir)
    assert after["progress"]["step"] == K + 2 and after["progress"]["world_size"] == 1
    assert after["progress"]["nimg"] == K * 8 + 2 * 4
    assert before["progress"]["world_size"] == 2
    # the optimiser went on from the saved moments (Adam's step count continues)
    st = next(iter(after["optimizers"]["disc"]["state"].values()))["step"]
    assert int(st) == K + 2
