"""The loss terms of Eqs. 2-15 and the convergence measure. Every term is a mean over
elements ("1/|x| ||.||_1"); the KL term is a mean over batch and latent dims by default."""

from __future__ import annotations

import torch

Number = torch.Tensor | float


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, computed in fp32 so the controller sees fp32 values."""
    return (a.float() - b.float()).abs().mean()


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Eq. 3: KL(N(mu, sigma^2) || N(0, I)) = 0.5 (mu^2 + sigma^2 - 1 - log sigma^2).
    'mean': over batch and latent dims; 'sum': summed over latent dims, mean over batch."""
    mu, logvar = mu.float(), logvar.float()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    if reduction == "sum":
        return kl.sum(dim=1).mean()
    return kl.mean()


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Latent dims whose posterior mean varies over the batch (Burda et al. 2015, A_u), as
    a float32 tensor on mu's device (counted without a host sync)."""
    if mu.shape[0] < 2:
        return torch.zeros((), device=mu.device)
    return (mu.detach().float().var(dim=0) > threshold).sum().float()


def convergence(L_d: float, e: float) -> float:
    """M = L_d + |e_t|: BEGAN's global convergence measure with the controller's error of
    the configured reading (Eq. 10's: L_d + |eta L_d - (L_g + alpha L_v)|)."""
    return L_d + abs(e)


# --- the learned similarity metric (Eq. 9) and its scale ---------------------------------

LS_NORMS = ("none", "rms", "std", "tanh")
LS_MATCHES = ("pair", "mean", "mean_std", "mmd")


def normalize_latents(z_real: torch.Tensor, z_fake: torch.Tensor, norm: str = "none",
                      eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Put D's latents of real and fake images on a scale L_s can be weighed against.

    D's latent is unbounded and is not trained by L_s (only by L_dis), so its scale drifts
    (measured: mean |z| of 5 to 12 after a few hundred steps) and beta L_s with it. Every
    scale is taken from the REAL batch and detached (a statistic, not a path for gradients):
    - 'none': as Eq. 9 is printed (raw latents);
    - 'rms':  both divided by the root mean square of the real latents over batch and dims:
              invariant to D's overall scale, keeps the relative geometry of the dims;
    - 'std':  both standardised per dim by the real batch's mean and std (a diagonal
              whitening: every latent dim weighs the same);
    - 'tanh': a bounded embedding, tanh of each coordinate (saturates when |z| is large)."""
    zr, zf = z_real.float(), z_fake.float()
    if norm == "none":
        return zr, zf
    if norm == "rms":
        s = zr.detach().pow(2).mean().sqrt().clamp_min(eps)
        return zr / s, zf / s
    if norm == "std":
        ref = zr.detach()
        m = ref.mean(dim=0, keepdim=True)
        s = ref.std(dim=0, keepdim=True, unbiased=False).clamp_min(eps) if len(ref) > 1 \
            else torch.ones_like(m)
        return (zr - m) / s, (zf - m) / s
    if norm == "tanh":
        return torch.tanh(zr), torch.tanh(zf)
    raise ValueError(f"unknown L_s normalisation '{norm}' ({', '.join(LS_NORMS)})")


def latent_similarity(z_real: torch.Tensor, z_fake: torch.Tensor, norm: str = "none",
                      match: str = "pair") -> torch.Tensor:
    """L_s between D's latents of real and fake images (Eq. 9), after `normalize_latents`.

    - 'pair':     mean |z_real - z_fake| over batch and dims: Eq. 9 for the VAE, where
                  z_fake is D's latent of x_v, the reconstruction of the same x;
    - 'mean':     feature matching (Salimans et al. 2016): mean over dims of
                  |E_batch z_real - E_batch z_fake|, for unpaired real/fake batches;
    - 'mean_std': the same plus |std_batch z_real - std_batch z_fake| (population std),
                  so the fakes must also spread like the reals;
    - 'mmd':      the maximum mean discrepancy of the two batches (`mmd`): zero only when
                  the distributions are equal, so also when per-dimension means and stds
                  match but the joint (which modes are present) does not."""
    zr, zf = normalize_latents(z_real, z_fake, norm)
    if match == "pair":
        return (zr - zf).abs().mean()
    if match == "mmd":
        return mmd(zr, zf)
    if match not in ("mean", "mean_std"):
        raise ValueError(f"unknown L_s matching '{match}' ({', '.join(LS_MATCHES)})")
    d = (zr.mean(dim=0) - zf.mean(dim=0)).abs().mean()
    if match == "mean_std":
        d = d + (_pop_std(zr) - _pop_std(zf)).abs().mean()
    return d


def mmd(a: torch.Tensor, b: torch.Tensor, scales: tuple[float, ...] = (0.25, 1.0, 4.0)
        ) -> torch.Tensor:
    """sqrt(MMD^2) between the batches a and b (rows are samples; biased V-statistic, so
    >= 0), kernel the mean of Gaussians exp(-d^2 / (s h)) over `scales` (Li et al. 2015,
    GMMN; several bandwidths as in MMD-GAN), h the median squared distance between the
    pooled samples (a detached statistic). Multiplied by sqrt(h), so the value is in the
    units of the latents, as the L1 readings are, and beta keeps its scale."""
    z = torch.cat([a, b]).float()  # a difference of kernel means: bf16 would round it away
    d2 = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1)  # not cdist: finite grad at 0
    n, m = a.shape[0], z.shape[0]
    # the off-diagonal entries without a boolean mask (which would wait for the host on GPU)
    v = d2.detach().flatten()[1:].view(m - 1, m + 1)[:, :-1].flatten().sort().values
    c = v.numel() // 2  # m (m - 1) is even: the median is the mean of the middle two
    h = torch.lerp(v[c - 1], v[c], 0.5).clamp_min(1e-12)  # bit for bit torch.quantile's
    k = sum(torch.exp(-d2 / (s * h)) for s in scales) / len(scales)
    mmd2 = k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
    return (mmd2.clamp_min(0) + 1e-8).sqrt() * h.sqrt()


def pull_away(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """EBGAN's pull-away term (Zhao et al. 2017, Eq. 6): the mean squared cosine similarity
    of D's latents of the generated batch over all pairs i != j. Near 1 when the samples are
    one image (their codes point one way), lower when they spread; in the generator's loss
    it repels the codes of one batch from each other, against the collapse of an
    auto-encoder discriminator's generator onto the images D reconstructs best."""
    n = z.shape[0]
    u = z.flatten(1).to(torch.promote_types(z.dtype, torch.float32))  # bf16 up, fp64 kept
    if n < 2:
        return u.sum() * 0
    u = u / u.norm(dim=1, keepdim=True).clamp_min(eps)
    c = (u @ u.T).pow(2)
    return (c.sum() - c.diagonal().sum()) / (n * (n - 1))


def _pop_std(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Population std over the batch with a finite gradient at zero spread."""
    return (z - z.mean(dim=0, keepdim=True)).pow(2).mean(dim=0).add(eps).sqrt()


def margin_push(push: torch.Tensor, fake_energy: torch.Tensor, L_d: torch.Tensor,
                margin: float, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """D's push on the fakes' energy (the k-weighted term of L_dis), without its gradient
    in a batch whose mean fake energy exceeds `margin` times the controller's set point
    eta L_d (0: never, Eq. 13 as printed).

    The energies are unbounded above, so L_d - k L_g rewards D for making a fake's
    reconstruction arbitrarily bad, and D can do that within a few steps, faster than k_t
    (a small integral gain) can fall: measured, L_g went 0.38 -> 1.7 -> 33 -> 804 in seven
    steps and the run never recovered (bench/results/fidelity.md). EBGAN's hinge (Zhao et al.
    2017, L_D = D(x) + [m - D(G(z))]^+) stops the push at a margin m; here m is relative to
    the real energy, so it needs no scale, and a multiple of the set point (>= 1), so the
    push is whole wherever the controller holds its ratio. The value is kept (logging, the
    controller). The batch is each rank's micro-batch (no extra all-reduce). Returns (push,
    1.0 where the push was stopped else 0.0: the health monitor)."""
    if margin <= 0:
        return push, torch.zeros((), device=push.device)
    keep = fake_energy.detach() <= margin * eta * L_d.detach()
    return torch.where(keep, push, push.detach()), (~keep).float()


# --- the controller's error signal (Eqs. 10-11) ------------------------------------------

ERROR_READINGS = ("eq10", "eq11_printed", "weighted_mean")


def controller_error(L_d: Number, L_g: Number, L_v: Number, eta: float, alpha: float,
                     reading: str = "eq10") -> Number:
    """e_t, the distance from the equilibrium (L_g + alpha L_v) / L_d = eta of Eq. 10:
    - 'eq10':          eta L_d - (L_g + alpha L_v)      (Eq. 10 and the measure M);
    - 'eq11_printed':  eta L_d - L_g + alpha L_v        (Eq. 11 as printed; its L_v term
                                                         raises k when D raises L_v);
    - 'weighted_mean': eta L_d - (L_g + alpha L_v) / (1 + alpha): the fake energy is the
                       weighted mean over the two kinds of fakes, so eta keeps BEGAN's
                       meaning (fake energy / real energy) whatever alpha.
    Floats or (float64, on the device) tensors: the same operations either way."""
    if reading == "eq10":
        return eta * L_d - (L_g + alpha * L_v)
    if reading == "eq11_printed":
        return eta * L_d - L_g + alpha * L_v
    if reading == "weighted_mean":
        return eta * L_d - (L_g + alpha * L_v) / (1.0 + alpha)
    raise ValueError(f"unknown controller error reading '{reading}' "
                     f"({', '.join(ERROR_READINGS)})")
