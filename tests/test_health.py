"""The health monitor against independent computations: the samples' diversity (mean
pairwise distance, over a real batch's), the share of steps with k at a clamp (counted on
the device by the controller), and its console warnings (once, after warm-up, again only
after recovery)."""

import numpy as np
import pytest
import torch

from vaegan_dist.controller import PIDController
from vaegan_dist.monitor import Health, mean_pairwise_distance


def test_mean_pairwise_distance_against_numpy():
    x = torch.randn(7, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    f = x.flatten(1).numpy().astype(np.float64)
    want = np.mean([np.linalg.norm(f[i] - f[j]) for i in range(7) for j in range(7) if i != j])
    assert mean_pairwise_distance(x).item() == pytest.approx(want, rel=1e-5)


def test_diversity_is_zero_for_one_image_and_one_for_the_data_itself():
    h = Health(0.15, 20.0)
    real = torch.rand(8, 3, 4, 4)
    z = torch.arange(8, dtype=torch.float32)[:, None]
    one_image = lambda z: real[:1].expand(len(z), -1, -1, -1)  # noqa: E731 - a "decoder"
    the_data = lambda z: real[z[:, 0].long()]  # noqa: E731
    assert h.diversity(one_image, z, real).item() == 0.0
    assert h.diversity(the_data, z, real).item() == pytest.approx(1.0)


def test_controller_counts_its_updates_at_a_clamp():
    from tests.test_controller import SEQ, K  # k = 0.26 0.6025 1 0 0 0.368 0.15

    c = PIDController(0.5, 0.1, 0.05, eta=0.5, alpha=0.3)
    for s in SEQ:
        c.update(*s)
    assert float(c.clamped) == sum(k in (0.0, 1.0) for k in K) == 3
    c.update(*SEQ[0], apply=torch.tensor(False))  # a skipped step: k stays 0.15
    assert float(c.clamped) == 3


def test_k_at_clamp_share_and_the_stuck_warning():
    h = Health(0.15, k_stuck_kimg=1.0, start_step=0)
    stats = {"k_clamped_steps": 5, "k": 0.01, "diversity": 0.9}
    assert h.update(stats, step=10, nimg=160) == [] and stats["k_at_clamp"] == 0.5
    warned = []
    for i in range(2, 12):  # from here on every step ends at k = 0
        stats = {"k_clamped_steps": 5 + 10 * (i - 1), "k": 0.0, "diversity": 0.9}
        warned += h.update(stats, step=10 * i, nimg=160 * i)
        assert stats["k_at_clamp"] == 1.0
    assert len(warned) == 1 and "k_t has been 0 for 1.12 kimg" in warned[0]  # once
    h.update({"k_clamped_steps": 105, "k": 0.2, "diversity": 0.9}, step=120, nimg=1920)
    out = []
    for i in range(13, 22):  # stuck again: a new warning after recovering
        out += h.update({"k_clamped_steps": 105 + 10 * (i - 12), "k": 0.0, "diversity": 0.9},
                        step=10 * i, nimg=160 * i)
    assert len(out) == 1


def test_collapse_warning_after_warm_up_once_until_recovered():
    h = Health(0.15, 20.0, warmup_kimg=1.0)
    assert h.update({"diversity": 0.02}, step=10, nimg=160) == []  # a fresh decoder
    out = h.update({"diversity": 0.05}, step=80, nimg=1280)
    assert len(out) == 1 and "collapsing (diversity 0.050" in out[0]
    assert h.update({"diversity": 0.04}, step=90, nimg=1440) == []
    assert h.update({"diversity": 0.5}, step=100, nimg=1600) == []
    assert len(h.update({"diversity": 0.1}, step=110, nimg=1760)) == 1


def test_margin_share_over_the_interval():
    h = Health(0.15, 20.0, start_step=0)
    for step, total, want in ((10, 3.0, 0.3), (20, 3.0, 0.0), (30, 13.0, 1.0)):
        stats = {"k": 0.1, "k_clamped_steps": 0, "margin_steps": total}
        h.update(stats, step, step * 16)
        assert stats["margin_share"] == pytest.approx(want)


@pytest.mark.parametrize("margin, hit", [(0.0, 0.0), (1.0, 1.0)])
def test_step_counts_the_steps_whose_push_the_margin_stopped(margin, hit):
    """margin_hit per step and its running sum margin_steps, from a real step: at eta 1e-3
    every fake batch lies far beyond the set point, so margin 1 stops the push each step,
    and margin 0 never."""
    from vaegan_dist.config import build_config
    from vaegan_dist.train import build_step

    step = build_step(build_config("tiny", ["model.n=4", "model.latent=3", "model.d_latent=5",
                                            "loss.eta=0.001", f"loss.margin={margin}"]),
                      torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32)
    first, second = step([x], 0).host(), step([x], 1).host()
    assert (first["margin_hit"], second["margin_hit"]) == (hit, hit)
    assert second["margin_steps"] == 2 * hit
