"""BEGAN-backbone encoder/decoder (paper sec. 4, BEGAN arXiv 1703.10717), the VAE generator
and the auto-encoder discriminator. No batch norm, dropout or transposed convolutions, so
batching several inputs through one forward is exactly equivalent to separate forwards
(except with the optional minibatch-std feature of D, `model.d_mbstd`, which reads groups
of consecutive samples by design)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig


def num_stages(resolution: int) -> int:
    """One stage per doubling from 8x8: 32 -> 3, 64 -> 4, 128 -> 5, 256 -> 6, 512 -> 7."""
    return int(math.log2(resolution)) - 2


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class _Stage(nn.Sequential):
    """Two conv3x3 + ELU (the unit both encoder and decoder repeat)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(_conv(cin, cout), nn.ELU(), _conv(cout, cout), nn.ELU())


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one feature map: the std over a group of samples, averaged over channels and
    positions (Karras et al. 2018, "minibatch standard deviation"). Groups are consecutive
    samples, so micro-batches and ranks holding whole groups see the same value; a batch
    not divisible by `group` is one group."""
    b, c, h, w = x.shape
    g = group if b % group == 0 else b
    y = x.float().reshape(b // g, g, c, h, w)
    s = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # per group
    s = s.repeat_interleave(g).to(x.dtype).reshape(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([x, s], dim=1)


class Encoder(nn.Module):
    """conv3x3+ELU, then per stage s (filters s*n) two conv3x3+ELU and a stride-2 conv
    between stages; the last stage is 8x8; a linear layer (no non-linearity) to `out_dim`.
    Layer for layer the discriminator encoder of BEGAN's widely used reference code.
    `mbstd` > 0: a minibatch-std feature map (groups of `mbstd`) enters the linear layer."""

    def __init__(self, resolution: int, n: int, out_dim: int, channels: int = 3,
                 ckpt: bool = False, mbstd: int = 0):
        super().__init__()
        s_count = num_stages(resolution)
        self.ckpt, self.mbstd = ckpt, mbstd
        self.stem = nn.Sequential(_conv(channels, n), nn.ELU())
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        cin = n
        for s in range(1, s_count + 1):
            self.stages.append(_Stage(cin, s * n))
            cin = s * n
            if s < s_count:  # sub-sampling keeps the stage's filters; the next stage widens
                self.downs.append(nn.Sequential(_conv(cin, cin, stride=2), nn.ELU()))
        self.fc = nn.Linear(8 * 8 * (cin + (mbstd > 0)), out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = _run(stage, x, self.ckpt)
            if i < len(self.downs):
                x = self.downs[i](x)
        if self.mbstd > 0:
            x = minibatch_std(x, self.mbstd)
        return self.fc(x.flatten(1))


class Decoder(nn.Module):
    """Linear (no non-linearity) to 8x8xn, then per stage two conv3x3+ELU with n filters and
    nearest-neighbour x2 up-sampling between stages; a final conv3x3 to `channels`, then
    `output`: 'linear' (the paper's and BEGAN's) or 'tanh'. Bounded to the images' range,
    D's reconstruction cannot make a fake's energy L_g arbitrarily large, which with k_t > 0
    its loss rewards (measured: L_g 0.3 -> 300 in a few steps, k_t knocked to 0); but tanh
    has a fixed point of its own, a saturated fake D reconstructs exactly, so it is not the
    default (bench/results/fidelity.md)."""

    def __init__(self, resolution: int, n: int, in_dim: int, channels: int = 3,
                 ckpt: bool = False, output: str = "linear"):
        super().__init__()
        self.n, self.ckpt, self.bounded = n, ckpt, output == "tanh"
        self.fc = nn.Linear(in_dim, 8 * 8 * n)
        self.stages = nn.ModuleList(_Stage(n, n) for _ in range(num_stages(resolution)))
        self.out = _conv(n, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.n, 8, 8)
        for i, stage in enumerate(self.stages):
            x = _run(stage, x, self.ckpt)
            if i < len(self.stages) - 1:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.out(x)
        return torch.tanh(x) if self.bounded else x


def _run(stage: nn.Module, x: torch.Tensor, ckpt: bool) -> torch.Tensor:
    if ckpt and torch.is_grad_enabled() and x.requires_grad:
        return checkpoint(stage, x, use_reentrant=False)
    return stage(x)


class VAEEncoder(nn.Module):
    """The generator's encoder: outputs (mu, log sigma^2), each of size N."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.latent = cfg.latent
        self.net = Encoder(cfg.resolution, cfg.n, 2 * cfg.latent, cfg.channels,
                           cfg.checkpoint_stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x)
        return h[:, : self.latent], h[:, self.latent:]


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Eq. 4: z_v = mu + eps * sigma, sigma = exp(logvar / 2)."""
    return mu + eps * torch.exp(0.5 * logvar)


class Discriminator(nn.Module):
    """A plain auto-encoder with the same backbone; returns (latent z, reconstruction)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.enc = Encoder(cfg.resolution, cfg.n, cfg.d_latent, cfg.channels,
                           cfg.checkpoint_stages, cfg.d_mbstd)
        self.dec = Decoder(cfg.resolution, cfg.n, cfg.d_latent, cfg.channels,
                           cfg.checkpoint_stages, cfg.d_output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.enc(x)
        return z, self.dec(z)


def build_models(cfg: ModelConfig, vae: bool = True) -> dict[str, nn.Module]:
    """The three trained modules: `encoder` (absent when vae=False), `decoder`, `disc`."""
    models: dict[str, nn.Module] = {}
    if vae:
        models["encoder"] = VAEEncoder(cfg)
    models["decoder"] = Decoder(cfg.resolution, cfg.n, cfg.latent, cfg.channels,
                                cfg.checkpoint_stages, cfg.g_output)
    models["disc"] = Discriminator(cfg)
    return models


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
