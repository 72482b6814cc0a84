"""The loss terms of Eqs. 2-15 and the convergence measure. Every term is a mean over
elements ("1/|x| ||.||_1"); the KL term is a mean over batch and latent dims by default."""

from __future__ import annotations

import torch


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


def convergence(L_d: float, L_g: float, L_v: float, eta: float, alpha: float) -> float:
    """M = L_d + |eta L_d - L_g - alpha L_v| (BEGAN's global convergence measure, extended)."""
    return L_d + abs(eta * L_d - L_g - alpha * L_v)
