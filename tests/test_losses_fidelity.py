"""The L_s scale/matching options and the controller's error readings, against independent
numpy computations; the config keys that select them; e_t logged beside k_t."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaegan_dist.config import ConfigError, LossConfig, build_config, from_dict, to_dict
from vaegan_dist.controller import PIDController
from vaegan_dist.losses import (
    ERROR_READINGS,
    LS_MATCHES,
    LS_NORMS,
    controller_error,
    latent_similarity,
)
from vaegan_dist.step import Forward
from vaegan_dist.variants import VARIANTS


def _latents(seed: int = 0, b: int = 6, h: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(3.0, 5.0, (b, h)), rng.normal(-1.0, 2.0, (b, h))


def _np_norm(zr: np.ndarray, zf: np.ndarray, norm: str) -> tuple[np.ndarray, np.ndarray]:
    if norm == "none":
        return zr, zf
    if norm == "rms":
        s = np.sqrt(np.mean(zr ** 2))
        return zr / s, zf / s
    if norm == "std":
        m, s = zr.mean(axis=0), zr.std(axis=0)
        return (zr - m) / s, (zf - m) / s
    return np.tanh(zr), np.tanh(zf)


@pytest.mark.parametrize("norm", LS_NORMS)
def test_latent_similarity_pair_against_numpy(norm):
    zr, zf = _latents()
    got = latent_similarity(torch.tensor(zr), torch.tensor(zf), norm, "pair").item()
    a, b = _np_norm(zr, zf, norm)
    assert got == pytest.approx(np.mean(np.abs(a - b)), rel=1e-5)


@pytest.mark.parametrize("norm", LS_NORMS)
def test_feature_matching_against_numpy(norm):
    zr, zf = _latents(1)
    a, b = _np_norm(zr, zf, norm)
    mean_term = np.mean(np.abs(a.mean(axis=0) - b.mean(axis=0)))
    std_term = np.mean(np.abs(a.std(axis=0) - b.std(axis=0)))
    tr, tf = torch.tensor(zr), torch.tensor(zf)
    assert latent_similarity(tr, tf, norm, "mean").item() == pytest.approx(mean_term, rel=1e-5)
    assert latent_similarity(tr, tf, norm, "mean_std").item() == pytest.approx(
        mean_term + std_term, rel=1e-4)


def test_rms_and_std_are_invariant_to_the_scale_of_d():
    zr, zf = _latents(2)
    for norm in ("rms", "std"):
        base = latent_similarity(torch.tensor(zr), torch.tensor(zf), norm).item()
        scaled = latent_similarity(torch.tensor(7.5 * zr), torch.tensor(7.5 * zf), norm).item()
        assert scaled == pytest.approx(base, rel=1e-6)
    raw = latent_similarity(torch.tensor(zr), torch.tensor(zf)).item()
    assert latent_similarity(torch.tensor(2 * zr), torch.tensor(2 * zf)).item() == \
        pytest.approx(2 * raw)


def test_normalisation_scale_is_detached_from_the_real_latents():
    """The scale is a statistic of the real batch: the gradient w.r.t. the fake latents is
    that of an L1 at a fixed scale, and the real latents get only the direct L1 path."""
    zr = torch.tensor([[2.0, -2.0], [4.0, 0.0]], requires_grad=True)
    zf = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
    latent_similarity(zr, zf, "rms").backward()
    s = float(np.sqrt(np.mean(np.array([[2.0, -2.0], [4.0, 0.0]]) ** 2)))
    want_f = -np.sign(np.array([[2.0, -2.0], [3.0, -1.0]])) / (4 * s)
    np.testing.assert_allclose(zf.grad.numpy(), want_f, rtol=1e-6)
    np.testing.assert_allclose(zr.grad.numpy(), -want_f, rtol=1e-6)


def test_feature_matching_of_a_collapsed_batch_is_not_zero():
    """Per-sample L1 to unrelated reals is minimised by one central image; matching the
    batch spread is not: a collapsed fake batch pays the real batch's std."""
    zr = torch.tensor([[-1.0, 2.0], [1.0, -2.0], [3.0, 0.0], [-3.0, 0.0]])
    collapsed = zr.mean(dim=0, keepdim=True).expand(4, 2).clone()
    assert latent_similarity(zr, collapsed, "none", "mean").item() == pytest.approx(0.0)
    std = zr.numpy().std(axis=0).mean()
    assert latent_similarity(zr, collapsed, "none", "mean_std").item() == pytest.approx(
        std, rel=1e-4)
    assert latent_similarity(zr, zr[[1, 0, 3, 2]], "none", "mean_std").item() == \
        pytest.approx(0.0, abs=1e-6)


def _np_mmd(a: np.ndarray, b: np.ndarray) -> float:
    """The MMD reading, written out sample pair by sample pair."""
    z = np.concatenate([a, b])
    m, n = len(z), len(a)
    d2 = np.array([[np.sum((z[i] - z[j]) ** 2) for j in range(m)] for i in range(m)])
    h = np.median([d2[i, j] for i in range(m) for j in range(m) if i != j])
    k = np.mean([np.exp(-d2 / (s * h)) for s in (0.25, 1.0, 4.0)], axis=0)
    mmd2 = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    return float(np.sqrt(max(mmd2, 0.0) + 1e-8) * np.sqrt(h))


@pytest.mark.parametrize("norm", LS_NORMS)
def test_mmd_against_numpy(norm):
    zr, zf = _latents(3)
    a, b = _np_norm(zr, zf, norm)
    got = latent_similarity(torch.tensor(zr), torch.tensor(zf), norm, "mmd").item()
    assert got == pytest.approx(_np_mmd(a, b), rel=1e-5)


def test_mmd_sees_dropped_modes_that_mean_std_does_not():
    """Four modes at the corners of a square against two of them, each twice: the same
    per-dimension mean and std, so feature matching of batch statistics is blind to the
    dropped modes; the MMD is not, and is ~0 (with a finite gradient) for the same set."""
    zr = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    dropped = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]],
                           requires_grad=True)
    assert latent_similarity(zr, dropped, "none", "mean_std").item() == pytest.approx(0.0,
                                                                                    abs=1e-6)
    assert latent_similarity(zr, dropped, "none", "mmd").item() > 0.3
    same = zr[[2, 0, 3, 1]].clone().requires_grad_(True)
    v = latent_similarity(zr, same, "none", "mmd")
    assert v.item() < 1e-3
    v.backward()
    assert torch.isfinite(same.grad).all()
    # the scale follows the latents' units, as the L1 readings do
    assert latent_similarity(3 * zr, 3 * dropped.detach(), "none", "mmd").item() == \
        pytest.approx(3 * latent_similarity(zr, dropped.detach(), "none", "mmd").item(),
                      rel=1e-5)


@pytest.mark.parametrize("reading", ERROR_READINGS)
def test_controller_error_readings(reading):
    L_d, L_g, L_v, eta, a = 0.4, 0.1, 0.3, 0.5, 0.3
    want = {"eq10": eta * L_d - (L_g + a * L_v),
            "eq11_printed": eta * L_d - L_g + a * L_v,
            "weighted_mean": eta * L_d - (L_g + a * L_v) / (1 + a)}[reading]
    assert controller_error(L_d, L_g, L_v, eta, a, reading) == pytest.approx(want)
    c = PIDController(0.5, 0.1, 0.05, eta, a, reading=reading)
    k = float(c.update(L_d, L_g, L_v))
    assert float(c.e1) == pytest.approx(want)
    assert k == pytest.approx(min(max(0.5 * want + 0.1 * want + 0.05 * want, 0.0), 1.0))
    # the same reading on device tensors (the trainer's path) gives the same bits
    t = torch.tensor
    on_device = controller_error(t(L_d, dtype=torch.float64), t(L_g, dtype=torch.float64),
                                 t(L_v, dtype=torch.float64), eta, a, reading)
    assert float(on_device) == controller_error(L_d, L_g, L_v, eta, a, reading)


def test_weighted_mean_reduces_to_began_without_a_vae():
    for reading in ERROR_READINGS:
        assert controller_error(0.4, 0.1, 0.0, 0.5, 0.0, reading) == pytest.approx(0.2 - 0.1)


def test_unknown_reading_and_norm_are_rejected():
    with pytest.raises(ValueError):
        PIDController(1e-3, 0, 0, 0.5, 0.3, reading="eq12")
    with pytest.raises(ValueError):
        latent_similarity(torch.zeros(2, 2), torch.zeros(2, 2), "l2")
    for bad in ("loss.error_reading=eq12", "loss.ls_norm=l2", "loss.ls_match=median",
                "controller.scale=log"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            build_config(None, [bad])


def compute_losses(f: Forward, cfg: LossConfig, k: float) -> dict[str, torch.Tensor]:
    return VARIANTS[cfg.variant].losses(f, cfg, k)


def _forward() -> Forward:
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g)

    return Forward(x=r(3, 1, 2, 2), x_g=r(3, 1, 2, 2), z_d=4 * r(3, 5), rec_d=r(3, 1, 2, 2),
                   z_g_d=r(3, 5), rec_g=r(3, 1, 2, 2), mu=r(3, 2), logvar=r(3, 2),
                   x_v=r(3, 1, 2, 2), z_v_d=r(3, 5), rec_v=r(3, 1, 2, 2))


@pytest.mark.parametrize("norm", LS_NORMS)
def test_compute_losses_uses_the_configured_similarity(norm):
    f = _forward()
    full = compute_losses(f, LossConfig(ls_norm=norm), 0.1)
    assert full["L_s"].item() == pytest.approx(latent_similarity(f.z_d, f.z_v_d, norm).item())
    assert full["L_gen"].item() == pytest.approx(
        (full["L_g"] + 0.3 * full["L_v"] + 0.1 * full["L_s"] + 0.1 * full["L_e"]).item())
    for match in LS_MATCHES:
        t = compute_losses(f, LossConfig(variant="began_star_lsm", ls_norm=norm,
                                         ls_match=match), 0.1)
        want = latent_similarity(f.z_d, f.z_g_d, norm, match).item()
        assert t["L_s"].item() == pytest.approx(want)
        assert t["L_gen"].item() == pytest.approx(t["L_g"].item() + 0.1 * want)


@pytest.mark.parametrize("match", LS_MATCHES)
def test_full_model_prior_term_is_the_ablations_ls(match):
    """L_sg (logged always) is BEGAN*+LSM's L_s of the same forward; with loss.ls_prior it
    joins L_gen (and only L_gen), else it carries no gradient."""
    f = _forward()
    f.z_g_d.requires_grad_(True)
    bsl = compute_losses(f, LossConfig(variant="began_star_lsm", ls_match=match), 0.1)
    off = compute_losses(f, LossConfig(ls_match=match), 0.1)
    on = compute_losses(f, LossConfig(ls_match=match, ls_prior=True), 0.1)
    assert off["L_sg"].item() == pytest.approx(bsl["L_s"].item())
    assert on["L_sg"].item() == pytest.approx(bsl["L_s"].item())
    assert not off["L_sg"].requires_grad
    assert on["L_gen"].item() == pytest.approx(off["L_gen"].item() + 0.1 * bsl["L_s"].item())
    assert on["L_enc"].item() == pytest.approx(off["L_enc"].item())
    assert on["L_dis"].item() == pytest.approx(off["L_dis"].item())
    g = torch.autograd.grad(on["L_gen"] - off["L_gen"], f.z_g_d)[0]
    want = torch.autograd.grad(0.1 * bsl["L_s"], f.z_g_d)[0]
    torch.testing.assert_close(g, want)


@pytest.mark.parametrize("variant", ["vae_began_star_lsm", "began_star_lsm"])
def test_generator_similarity_in_units_of_the_real_latent_rms(variant):
    """loss.ls_gen_scale=rms: the similarity terms of L_gen (L_s, and L_sg with the prior
    term) are divided by the real latents' rms, a detached statistic; every logged term,
    L_enc and L_dis are unchanged, and the value is invariant to the scale of D's latents."""
    f = _forward()
    f.z_d.requires_grad_(True)
    vae = variant == "vae_began_star_lsm"
    beta, k = LossConfig().beta, 0.2
    raw = compute_losses(f, LossConfig(variant=variant, ls_prior=vae), k)
    got = compute_losses(f, LossConfig(variant=variant, ls_prior=vae, ls_gen_scale="rms"), k)
    rms = float(np.sqrt(np.mean(f.z_d.detach().numpy().astype(np.float64) ** 2)))
    sim = raw["L_s"].item() + (raw["L_sg"].item() if vae else 0.0)
    adv = raw["L_gen"].item() - beta * sim  # L_g + alpha L_v + gamma L_e, or L_g
    assert got["L_gen"].item() == pytest.approx(adv + beta * sim / rms, rel=1e-5)
    for term in raw:
        if term != "L_gen":
            assert got[term].item() == pytest.approx(raw[term].item()), term
    # the scale carries no gradient: d L_gen / d z_d is the raw similarity's, divided by rms
    g_raw = torch.autograd.grad(raw["L_gen"], f.z_d)[0]
    g_got = torch.autograd.grad(got["L_gen"], f.z_d)[0]
    torch.testing.assert_close(g_got, g_raw / rms)
    # invariant to D's scale: every latent x 10 gives the same L_gen
    for z in (f.z_d, f.z_g_d, f.z_v_d):
        z.data.mul_(10)
    big = compute_losses(f, LossConfig(variant=variant, ls_prior=vae, ls_gen_scale="rms"), k)
    assert big["L_gen"].item() == pytest.approx(got["L_gen"].item(), rel=1e-5)


@pytest.mark.parametrize("preset, overrides, want", [
    ("celeba64", [], "rms"),  # the full model's default is auto; D is 64 wide
    ("tiny", [], "none"),  # 16 wide: rms was measured to lose there
    ("tiny", ["model.n=64", "model.d_latent=64"], "rms"),  # issue 12's GPU settings
    ("tiny", ["model.n=64", "model.d_latent=32"], "none"),  # the narrower of the two decides
    ("celeba64", ["loss.ls_gen_scale=none"], "none"),  # an explicit setting wins
    ("tiny", ["loss.ls_gen_scale=rms"], "rms"),
    ("celeba64", ["loss.variant=began_star_lsm"], "none"),  # the ablations' default: raw
    ("celeba64", ["loss.variant=began", "loss.ls_gen_scale=auto"], "none"),  # no L_s
    ("celeba64", ["loss.ls_norm=rms"], "none"),  # L_s already normalised: not twice
    ("celeba64", ["loss.variant=began_star_lsm", "loss.ls_gen_scale=auto"], "rms"),
])
def test_ls_gen_scale_auto_is_resolved_from_the_width_of_d(preset, overrides, want):
    """auto is decided once, in config.resolve: what config.yaml holds and the step reads is
    none or rms, and a resolved config read back (checkpoints, generate) is unchanged."""
    cfg = build_config(preset, overrides)
    assert cfg.loss.ls_gen_scale == want
    assert from_dict(to_dict(cfg)) == cfg


def test_ls_gen_scale_auto_read_back_from_a_dict_is_resolved():
    """A hand-written config.yaml that says auto is resolved on reading, as on building."""
    data = to_dict(build_config("celeba64"))
    data["loss"]["ls_gen_scale"] = "auto"
    assert from_dict(data).loss.ls_gen_scale == "rms"
    data["model"]["n"] = 16
    assert from_dict(data).loss.ls_gen_scale == "none"


def test_ls_gen_scale_is_a_checked_choice():
    assert build_config("tiny", ["loss.ls_gen_scale=rms"]).loss.ls_gen_scale == "rms"
    for bad in (["loss.ls_gen_scale=max"],
                ["loss.ls_gen_scale=rms", "loss.ls_norm=rms"],  # would divide twice
                ["loss.ls_gen_scale=rms", "loss.variant=began"]):  # no L_s to rescale
        with pytest.raises(ConfigError, match="ls_gen_scale"):
            build_config("tiny", bad)


def test_step_logs_e_beside_k():
    from vaegan_dist.train import build_step

    step = build_step(build_config("tiny", ["model.n=4", "model.latent=3", "model.d_latent=5",
                                            "loss.error_reading=weighted_mean"]),
                      torch.device("cpu"))
    cfg = step.cfg
    stats = step([torch.rand(2, 3, 32, 32)], 0).host()
    assert stats["e"] == pytest.approx(controller_error(
        stats["L_d"], stats["L_g"], stats["L_v"], cfg.eta, cfg.alpha, "weighted_mean"))
    assert stats["M"] == pytest.approx(stats["L_d"] + abs(stats["e"]))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_margin_stops_d_push_beyond_the_margin(variant):
    """loss.margin: L_dis keeps its value; its gradient into the fakes' reconstructions is
    -k d(push) while the mean fake energy is within margin x eta x L_d, and zero beyond; with
    margin 0 (the paper) and within the margin the gradient equals the unmargined one."""
    f = _forward()
    vae = VARIANTS[variant].vae
    for t in (f.rec_d, f.rec_g, f.rec_v):
        t.requires_grad_(True)
    ref = compute_losses(f, LossConfig(variant=variant, margin=0.0), 0.3)
    # independent energies: mean |x - rec| per image kind
    L_d, L_g = (f.x - f.rec_d).abs().mean(), (f.x_g - f.rec_g).abs().mean()
    L_v = (f.x_v - f.rec_v).abs().mean() if vae else torch.zeros(())
    fake = ((L_g + 0.3 * L_v) / 1.3 if vae else L_g).item()
    ratio = fake / L_d.item() / LossConfig().eta  # in multiples of the set point
    want_g, want_d = torch.autograd.grad(ref["L_dis"], (f.rec_g, f.rec_d))
    for margin, pushed in ((0.0, True), (ratio * 1.01, True), (ratio * 0.99, False)):
        t = compute_losses(f, LossConfig(variant=variant, margin=margin), 0.3)
        assert t["L_dis"].item() == ref["L_dis"].item()  # the value is kept
        g_g, g_d = torch.autograd.grad(t["L_dis"], (f.rec_g, f.rec_d))
        torch.testing.assert_close(g_d, want_d)  # D's reconstruction of reals: unchanged
        if pushed:
            torch.testing.assert_close(g_g, want_g)
        else:
            assert g_g.abs().sum().item() == 0.0
    for bad in ("-1", "0.5"):
        with pytest.raises(ConfigError, match="loss.margin"):
            build_config(None, [f"loss.margin={bad}"])


def _np_pull_away(z: np.ndarray) -> float:
    """EBGAN's Eq. 6 written out pair by pair."""
    n = len(z)
    u = [v / np.linalg.norm(v) for v in z.astype(np.float64)]
    return sum(float(u[i] @ u[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (
        n * (n - 1))


def test_pull_away_against_numpy_and_at_its_bounds():
    from vaegan_dist.losses import pull_away

    zr, zf = _latents(b=7, h=5)
    for z in (zr, zf):
        assert pull_away(torch.tensor(z)).item() == pytest.approx(_np_pull_away(z), rel=1e-5)
    one = torch.tensor(zr[:1]).repeat(6, 1) * torch.arange(1, 7.0)[:, None]
    assert pull_away(one).item() == pytest.approx(1.0, rel=1e-5)  # one direction: collapsed
    assert pull_away(torch.eye(5)).item() == pytest.approx(0.0, abs=1e-7)  # orthogonal codes
    assert pull_away(torch.tensor(zr[:1])).item() == 0.0  # a batch of one has no pairs
    # its gradient against finite differences (float64)
    assert torch.autograd.gradcheck(pull_away, (torch.tensor(zf).requires_grad_(),))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pull_away_joins_only_the_generator_loss(variant):
    """loss.pullaway=w adds w x pull_away(D's latents of the prior samples) to L_gen, with
    its gradient to those latents; every other term is unchanged, and 0 leaves L_gen as is."""
    from vaegan_dist.losses import pull_away

    f = _forward()
    f.z_g_d.requires_grad_(True)
    off = compute_losses(f, LossConfig(variant=variant), 0.2)
    on = compute_losses(f, LossConfig(variant=variant, pullaway=0.5), 0.2)
    want = _np_pull_away(f.z_g_d.detach().numpy())
    assert on["L_gen"].item() == pytest.approx(off["L_gen"].item() + 0.5 * want, rel=1e-5)
    # L_pt is logged either way; at weight 0 it is a monitor without a graph
    assert off["L_pt"].item() == pytest.approx(want, rel=1e-5) and not off["L_pt"].requires_grad
    assert on["L_pt"].requires_grad
    for term in off:
        if term != "L_gen":
            assert on[term].item() == pytest.approx(off[term].item()), term
    g = torch.autograd.grad(on["L_gen"] - off["L_gen"], f.z_g_d)[0]
    torch.testing.assert_close(g, torch.autograd.grad(0.5 * pull_away(f.z_g_d), f.z_g_d)[0])
    with pytest.raises(ConfigError, match="pullaway"):
        build_config("tiny", ["loss.pullaway=-0.1"])
