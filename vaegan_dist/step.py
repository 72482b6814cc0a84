"""One training iteration, laid out like Algorithm 1 of the paper.

All three losses are functions of one shared forward at the current parameters (Algorithm 1
computes Z'_{v,g,d} and X'_{v,g,d} before any update): the encoder runs once, the decoder
once on z_v and once on z_g, the discriminator once on each of x, x_v, x_g (separate graphs,
so a phase's backward visits only the branches its loss depends on). Then three phases,
each the backward of its own loss into its own parameters only (`backward(inputs=...)`):

    encoder phase        L_enc = L_n + beta L_s + gamma L_e                  -> encoder
    generator phase      L_gen = L_g + alpha L_v + beta L_s + gamma L_e      -> decoder
    discriminator phase  L_dis = L_d - k_{t-1} (L_g + alpha L_v)             -> disc

The gradient of L_dis with respect to D's parameters through the shared forward equals
that through detached fakes (detaching only cuts the path into G), so D is not re-run.
The controller is then fed the global-batch means of (L_d, L_g, L_v)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from . import dist
from .config import LossConfig
from .controller import PIDController
from .engine import Engine
from .losses import active_units, kl_normal, l1, latent_similarity
from .models import reparameterize

TERMS = ("L_d", "L_g", "L_v", "L_e", "L_n", "L_s", "L_dis", "L_gen", "L_enc")
# the terms each ablation (paper Table 1) uses; the others are logged as null
USED = {
    "began": ("L_d", "L_g", "L_dis", "L_gen"),
    "began_star_lsm": ("L_d", "L_g", "L_s", "L_dis", "L_gen"),
    "vae_began_star_lsm": TERMS,
}


def step_noise(seed: int, step: int, global_batch: int, latent: int, vae: bool,
               device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(eps, z_g) for the whole global batch of a step, a pure function of (seed, step):
    every rank draws the same tensors and takes its slice, so 1 process x 2B and
    2 processes x B (or 2 micro-batches of B) see identical noise per sample."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
    eps = torch.randn(global_batch, latent, generator=g) if vae else None
    z_g = torch.randn(global_batch, latent, generator=g)
    return (eps.to(device) if eps is not None else None), z_g.to(device)


@dataclass
class Forward:
    """Everything one shared forward produces, for the loss functions."""

    x: torch.Tensor
    x_g: torch.Tensor
    z_d: torch.Tensor
    rec_d: torch.Tensor
    z_g_d: torch.Tensor
    rec_g: torch.Tensor
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None
    x_v: torch.Tensor | None = None
    z_v_d: torch.Tensor | None = None
    rec_v: torch.Tensor | None = None


def shared_forward(models: dict[str, nn.Module], x: torch.Tensor, eps: torch.Tensor | None,
                   z_g: torch.Tensor) -> Forward:
    """Algorithm 1 lines 3-6 and 9: each network runs once per input batch. The batches are
    not concatenated: separate graphs let the encoder and generator phases back-propagate
    only through the branches their losses touch (e.g. not through D(x) or D(x_g) for
    L_enc), which saves about a fifth of the step (bench/results/step.md)."""
    dec, disc = models["decoder"], models["disc"]
    x_g = dec(z_g.to(x.dtype))
    z_d, rec_d = disc(x)
    z_g_d, rec_g = disc(x_g)
    f = Forward(x=x, x_g=x_g, z_d=z_d, rec_d=rec_d, z_g_d=z_g_d, rec_g=rec_g)
    if "encoder" in models:
        f.mu, f.logvar = models["encoder"](x)
        f.x_v = dec(reparameterize(f.mu, f.logvar, eps))
        f.z_v_d, f.rec_v = disc(f.x_v)
    return f


def compute_losses(f: Forward, cfg: LossConfig, k: float) -> dict[str, torch.Tensor]:
    """Eqs. 2, 3, 7, 9, 13-15 for the configured variant (scalar fp32 tensors)."""
    a, b, c = cfg.alpha, cfg.beta, cfg.gamma
    t: dict[str, torch.Tensor] = {
        "L_d": l1(f.x, f.rec_d),  # Eq. 7
        "L_g": l1(f.x_g, f.rec_g),  # Eq. 7 (SPEC: x_g, not the printed x)
    }
    if cfg.variant == "vae_began_star_lsm":
        t["L_v"] = l1(f.x_v, f.rec_v)  # Eq. 7
        t["L_e"] = l1(f.x, f.x_v)  # Eq. 2
        t["L_n"] = kl_normal(f.mu, f.logvar, cfg.kl_reduction)  # Eq. 3
        t["L_s"] = latent_similarity(f.z_d, f.z_v_d, cfg.ls_norm)  # Eq. 9 (paired)
        adv = t["L_g"] + a * t["L_v"]
        t["L_dis"] = t["L_d"] - k * adv  # Eq. 13
        t["L_gen"] = adv + b * t["L_s"] + c * t["L_e"]  # Eq. 14
        t["L_enc"] = t["L_n"] + b * t["L_s"] + c * t["L_e"]  # Eq. 15
    elif cfg.variant == "began_star_lsm":
        # no VAE: the learned similarity compares D's latents of real and generated images
        t["L_s"] = latent_similarity(f.z_d, f.z_g_d, cfg.ls_norm, cfg.ls_match)
        t["L_dis"] = t["L_d"] - k * t["L_g"]
        t["L_gen"] = t["L_g"] + b * t["L_s"]
    else:  # began
        t["L_dis"] = t["L_d"] - k * t["L_g"]
        t["L_gen"] = t["L_g"]
    return t


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


class TrainStep:
    """Phases (encoder, generator, discriminator), each with its own loss and optimiser.

    `models` holds `decoder`, `disc` and (VAE variants) `encoder`, possibly DDP-wrapped;
    `optimizers` the same keys. `autocast` is a context factory for the forwards; the
    losses are computed in fp32 either way. `grad_sync(name)` returns a context in which a
    backward may skip the cross-rank gradient all-reduce (DDP's `no_sync`) on all but the
    last micro-batch."""

    def __init__(self, models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 controller: PIDController, loss_cfg: LossConfig, latent: int, seed: int,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 no_sync: Callable[[nn.Module], contextlib.AbstractContextManager] | None = None,
                 engine: Engine | None = None):
        self.models, self.optimizers = models, optimizers
        self.controller, self.cfg = controller, loss_cfg
        self.latent, self.seed = latent, seed
        self.vae = "encoder" in models
        self.autocast = autocast or contextlib.nullcontext
        self.no_sync = no_sync
        # the engine adapter (plain/DDP/accelerate/DeepSpeed) owns backward, sync and steps
        self.engine = engine or _LocalEngine(self)
        if engine is not None:
            self.models = engine.modules
        self.phases = ([("encoder", "L_enc")] if self.vae else []) + [
            ("decoder", "L_gen"), ("disc", "L_dis")]

    def _sync_ctx(self, last: bool) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if not last and self.no_sync is not None:
            for m in self.models.values():
                stack.enter_context(self.no_sync(m))
        return stack

    def __call__(self, micro_batches: list[torch.Tensor], step: int) -> dict[str, float | None]:
        """One optimiser step over `micro_batches` (this rank's share of the global batch)."""
        k_prev = self.controller.k
        n_micro = len(micro_batches)
        b = micro_batches[0].shape[0]
        world, rank = dist.world_size(), dist.rank()
        eps_all, zg_all = step_noise(self.seed, step, b * world * n_micro, self.latent,
                                     self.vae, micro_batches[0].device)
        eng = self.engine
        eng.zero_grad()
        sums = torch.zeros(len(TERMS) + 1, dtype=torch.float64)
        for m, x in enumerate(micro_batches):
            lo = (m * world + rank) * b  # this micro-batch's slice of the global batch
            eps = eps_all[lo:lo + b] if eps_all is not None else None
            with eng.sync(last=m == n_micro - 1):
                with eng.autocast():
                    f = shared_forward(self.models, x, eps, zg_all[lo:lo + b])
                terms = compute_losses(f, self.cfg, k_prev)
                for i, (name, loss_name) in enumerate(self.phases):
                    last = i == len(self.phases) - 1
                    eng.backward(name, terms[loss_name] / n_micro, retain_graph=not last)
            for j, name in enumerate(TERMS):
                if name in terms:
                    sums[j] += terms[name].detach().double().item()
            if f.mu is not None:
                sums[-1] += active_units(f.mu)
            eng.after_micro(last=m == n_micro - 1)
        # one fused all-reduce of every statistic: global-batch means on every rank
        means = dist.all_reduce_mean(sums / n_micro)
        vals = means.tolist()
        stats: dict[str, float | None] = {
            name: (vals[j] if name in USED[self.cfg.variant] else None)
            for j, name in enumerate(TERMS)}
        L_d, L_g, L_v = vals[0], vals[1], vals[2]
        stats["k_prev"] = k_prev
        stats["k"] = self.controller.update(L_d, L_g, L_v)
        stats["e"] = self.controller.e1  # e_t of this step (the configured reading)
        stats["M"] = L_d + abs(stats["e"])  # convergence measure, L_d + |e_t|
        if self.vae:
            stats["active_units"] = vals[-1]
        return stats


class _LocalEngine:
    """The engine interface over the step's own models/optimizers/no_sync (no adapter)."""

    def __init__(self, step: TrainStep):
        self.s = step

    def autocast(self):
        return self.s.autocast()

    def sync(self, last: bool) -> contextlib.AbstractContextManager:
        return self.s._sync_ctx(last)

    def backward(self, name: str, loss: torch.Tensor, retain_graph: bool) -> None:
        torch.autograd.backward(loss, inputs=_params(self.s.models[name]),
                                retain_graph=retain_graph)

    def zero_grad(self) -> None:
        for opt in self.s.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def after_micro(self, last: bool) -> None:
        if last:
            for opt in self.s.optimizers.values():
                opt.step()


def optimizer_params(optimizers: dict[str, torch.optim.Optimizer]) -> Iterator[dict]:
    for opt in optimizers.values():
        yield from opt.param_groups
