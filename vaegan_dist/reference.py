"""A naive reference of one iteration: a separate, fresh forward for each phase's loss,
fakes explicitly detached for the discriminator, `torch.autograd.grad` of each loss with
respect to its own module only. Slow on purpose; used by the gradient-routing tests and as
the baseline of the train-step benchmark. Only the full VAE variant is covered."""

from __future__ import annotations

import torch
from torch import nn

from .config import LossConfig
from .losses import kl_normal, l1, latent_similarity, pull_away
from .models import reparameterize


def naive_grads(models: dict[str, nn.Module], x: torch.Tensor, eps: torch.Tensor,
                z_g: torch.Tensor, cfg: LossConfig, k: float) -> dict[str, list[torch.Tensor]]:
    """Per module, the gradient of its own loss (Eqs. 13-15) at the current parameters."""
    E, G, D = models["encoder"], models["decoder"], models["disc"]
    a, b, c = cfg.alpha, cfg.beta, cfg.gamma

    # encoder: L_enc = L_n + beta L_s + gamma L_e
    mu, logvar = E(x)
    x_v = G(reparameterize(mu, logvar, eps))
    z_d, _ = D(x)
    z_v, _ = D(x_v)
    L_s = latent_similarity(z_d, z_v, cfg.ls_norm)  # Eq. 9 at the configured scale
    L_enc = kl_normal(mu, logvar, cfg.kl_reduction) + b * L_s + c * l1(x, x_v)
    g_enc = torch.autograd.grad(L_enc, list(E.parameters()))

    # decoder: L_gen = L_g + alpha L_v + beta L_s + gamma L_e
    mu, logvar = E(x)
    x_v = G(reparameterize(mu, logvar, eps))
    x_g = G(z_g)
    z_d, _ = D(x)
    z_v, rec_v = D(x_v)
    z_gd, rec_g = D(x_g)
    L_s = latent_similarity(z_d, z_v, cfg.ls_norm)
    if cfg.ls_gen_scale == "rms":  # the similarity terms in units of the real latents' rms
        b = b / z_d.detach().pow(2).mean().sqrt()
    L_gen = l1(x_g, rec_g) + a * l1(x_v, rec_v) + b * L_s + c * l1(x, x_v)
    if cfg.ls_prior:  # + beta L_sg: the prior samples' latents against the real batch's
        L_gen = L_gen + b * latent_similarity(z_d, z_gd, cfg.ls_norm, cfg.ls_match)
    if cfg.pullaway:  # EBGAN's pull-away term of the prior samples' latents
        L_gen = L_gen + cfg.pullaway * pull_away(z_gd)
    g_dec = torch.autograd.grad(L_gen, list(G.parameters()))

    # discriminator: L_dis = L_d - k (L_g + alpha L_v), fakes detached
    with torch.no_grad():
        x_v = G(reparameterize(*E(x), eps))
        x_g = G(z_g)
    _, rec_d = D(x)
    _, rec_g = D(x_g)
    _, rec_v = D(x_v)
    L_dis = l1(x, rec_d) - k * (l1(x_g, rec_g) + a * l1(x_v, rec_v))
    g_dis = torch.autograd.grad(L_dis, list(D.parameters()))
    return {"encoder": list(g_enc), "decoder": list(g_dec), "disc": list(g_dis)}


def naive_step(models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               x: torch.Tensor, eps: torch.Tensor, z_g: torch.Tensor, cfg: LossConfig,
               k: float) -> None:
    """Apply `naive_grads` with the optimisers (the benchmark's baseline step)."""
    grads = naive_grads(models, x, eps, z_g, cfg, k)
    for name, m in models.items():
        for p, g in zip(m.parameters(), grads[name]):
            p.grad = g
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
