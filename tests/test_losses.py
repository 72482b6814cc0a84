"""Each loss term against a hand computation on small fixed tensors."""

import math

import pytest
import torch

from vaegan_dist.config import LossConfig
from vaegan_dist.losses import active_units, convergence, kl_normal, l1
from vaegan_dist.step import Forward
from vaegan_dist.variants import VARIANTS


def test_l1_is_mean_absolute_difference():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [5.0, 1.0]])
    assert l1(a, b).item() == pytest.approx((1 + 0 + 2 + 3) / 4)


def test_kl_mean_and_sum():
    mu = torch.tensor([[0.0, 1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # 0.5 (mu^2 + sigma^2 - 1 - log sigma^2): 0 for the first dim, 0.5 (1 + 4 - 1 - ln 4)
    second = 0.5 * (1 + 4 - 1 - math.log(4.0))
    assert kl_normal(mu, logvar, "mean").item() == pytest.approx(second / 2)
    assert kl_normal(mu, logvar, "sum").item() == pytest.approx(second)
    # a batch of two: 'sum' sums over latent dims and averages over the batch
    mu2, lv2 = torch.cat([mu, torch.zeros(1, 2)]), torch.cat([logvar, torch.zeros(1, 2)])
    assert kl_normal(mu2, lv2, "sum").item() == pytest.approx(second / 2)
    assert kl_normal(mu2, lv2, "mean").item() == pytest.approx(second / 4)


def test_active_units_counts_varying_dims():
    mu = torch.tensor([[0.0, 1.0, 5.0], [0.0, -1.0, 5.01]])
    assert active_units(mu) == 1


def compute_losses(f, cfg, k):
    return VARIANTS[cfg.variant].losses(f, cfg, k)


def _forward():
    """Batch of 2 'images' of 1x1x2 and latents of size 2, chosen for easy arithmetic."""
    t = torch.tensor
    return Forward(
        x=t([[[[1.0, 0.0]]], [[[0.0, -1.0]]]]),
        x_v=t([[[[0.5, 0.0]]], [[[0.0, 0.0]]]]),
        x_g=t([[[[0.2, 0.2]]], [[[-0.2, 0.6]]]]),
        rec_d=t([[[[1.0, 1.0]]], [[[0.0, 0.0]]]]),
        rec_v=t([[[[0.0, 0.0]]], [[[0.0, 0.5]]]]),
        rec_g=t([[[[0.2, 0.0]]], [[[0.2, 0.6]]]]),
        z_d=t([[1.0, 2.0], [0.0, 0.0]]),
        z_v_d=t([[0.0, 2.0], [1.0, 1.0]]),
        z_g_d=t([[1.0, 1.0], [0.0, 2.0]]),
        mu=t([[0.0, 0.0], [0.0, 2.0]]),
        logvar=t([[0.0, 0.0], [0.0, 0.0]]),
    )


def test_full_model_terms_by_hand():
    cfg = LossConfig()  # alpha .3 beta .1 gamma .1
    k = 0.25
    t = {n: v.item() for n, v in compute_losses(_forward(), cfg, k).items()}
    L_d = (0 + 1 + 0 + 1) / 4  # |x - x'_d|
    L_g = (0 + 0.2 + 0.4 + 0) / 4  # |x_g - x'_g|
    L_v = (0.5 + 0 + 0 + 0.5) / 4  # |x_v - x'_v|
    L_e = (0.5 + 0 + 0 + 1) / 4  # |x - x_v|
    L_n = (0 + 0 + 0 + 0.5 * 4) / 4  # 0.5 mu^2 where sigma = 1
    L_s = (1 + 0 + 1 + 1) / 4  # |z_d - z'_v|
    assert t["L_d"] == pytest.approx(L_d)
    assert t["L_g"] == pytest.approx(L_g)
    assert t["L_v"] == pytest.approx(L_v)
    assert t["L_e"] == pytest.approx(L_e)
    assert t["L_n"] == pytest.approx(L_n)
    assert t["L_s"] == pytest.approx(L_s)
    assert t["L_dis"] == pytest.approx(L_d - k * (L_g + 0.3 * L_v))  # Eq. 13
    assert t["L_gen"] == pytest.approx(L_g + 0.3 * L_v + 0.1 * L_s + 0.1 * L_e)  # Eq. 14
    assert t["L_enc"] == pytest.approx(L_n + 0.1 * L_s + 0.1 * L_e)  # Eq. 15


def test_ablation_terms_by_hand():
    f = _forward()
    lsm = {n: v.item() for n, v in
           compute_losses(f, LossConfig(variant="began_star_lsm", ls_match="pair"),
                          0.5).items()}
    L_d, L_g = 0.5, 0.15
    L_s = (0 + 1 + 0 + 2) / 4  # |z_d - z'_g|: no VAE, real vs generated latents
    assert set(lsm) == {"L_d", "L_g", "L_s", "L_pt", "L_dis", "L_gen", "margin_hit"}
    assert lsm["margin_hit"] == 0.0  # L_g / L_d = 0.3, within loss.margin x eta = 3
    assert lsm["L_dis"] == pytest.approx(L_d - 0.5 * L_g)
    assert lsm["L_gen"] == pytest.approx(L_g + 0.1 * L_s)
    began = {n: v.item() for n, v in compute_losses(f, LossConfig(variant="began"), 0.5).items()}
    assert set(began) == {"L_d", "L_g", "L_pt", "L_dis", "L_gen", "margin_hit"}
    assert began["L_gen"] == pytest.approx(L_g)


def test_convergence_measure():
    # M = L_d + |eta L_d - L_g - alpha L_v|
    from vaegan_dist.losses import controller_error

    e = controller_error(1.0, 0.2, 0.5, 0.5, 0.3, "eq10")
    assert convergence(1.0, e) == pytest.approx(1.0 + abs(0.5 - 0.2 - 0.15))
    e = controller_error(0.2, 0.5, 0.5, 0.5, 0.3, "eq10")
    assert convergence(0.2, e) == pytest.approx(0.2 + abs(0.1 - 0.5 - 0.15))
