"""An exponential moving average of the generator's weights (train.ema_kimg), the generator
that samples are drawn from: weight averaging smooths the oscillation of adversarial
training (Yazici et al. 2019, "The unusual effectiveness of averaging in GAN training";
Karras et al. 2018 and StyleGAN2-ADA's G_ema). Training never reads it: the step, the
controller and the health monitor see the trained decoder, so a run with and without it
trains identically and the two generators can be scored from one run.

The decay is set by a half-life in images, as in StyleGAN2-ADA: each step multiplies the
old average by 0.5 ** (images per step / half-life images), and early in a run the
half-life is at most train.ema_rampup x the images seen, so the average does not hold on
to the random initial weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class GeneratorEma:
    """A float32 copy of the decoder, updated after each optimiser step; a checkpoint part."""

    def __init__(self, decoder: nn.Module, half_life_kimg: float, rampup: float):
        self.half_life = half_life_kimg * 1000.0
        self.rampup = rampup
        self.module = copy.deepcopy(decoder).float().eval().requires_grad_(False)

    def decay(self, nimg: int, step_images: int) -> float:
        """The weight the old average keeps after a step that ended at `nimg` images."""
        half = self.half_life
        if self.rampup > 0:
            half = min(half, nimg * self.rampup)
        return 0.5 ** (step_images / max(half, 1e-8))

    @torch.no_grad()
    def update(self, decoder: nn.Module, nimg: int, step_images: int) -> None:
        beta = self.decay(nimg, step_images)
        for avg, p in zip(self.module.parameters(), decoder.parameters(), strict=True):
            avg.lerp_(p.detach().float(), 1.0 - beta)
        for avg, b in zip(self.module.buffers(), decoder.buffers(), strict=True):
            avg.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
        self.module.float()
