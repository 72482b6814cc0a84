"""One training iteration, laid out like Algorithm 1 of the paper.

All the losses are functions of one shared forward at the current parameters (Algorithm 1
computes Z'_{v,g,d} and X'_{v,g,d} before any update): the encoder runs once, the decoder
once on z_v and once on z_g, the discriminator once on each of x, x_v, x_g (separate graphs,
so a phase's backward visits only the branches its loss depends on). Then the variant's
phases (variants.py), each the backward of its own loss into its own parameters only:

    encoder phase        L_enc = L_n + beta L_s + gamma L_e                  -> encoder
    generator phase      L_gen = L_g + alpha L_v + beta L_s + gamma L_e      -> decoder
    discriminator phase  L_dis = L_d - k_{t-1} (L_g + alpha L_v)             -> disc

The gradient of L_dis with respect to D's parameters through the shared forward equals
that through detached fakes (detaching only cuts the path into G), so D is not re-run.
The controller is then fed the global-batch means of (L_d, L_g, L_v). Nothing in a step
waits for the device: the statistics stay there (`StepStats`) until a logging step reads
them in one copy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import dist
from .config import LossConfig
from .controller import PIDController
from .engine import Engine
from .guard import GuardState, grads_finite
from .losses import active_units, convergence
from .models import reparameterize
from .variants import TERMS, Variant


def step_noise(seed: int, step: int, global_batch: int, latent: int, vae: bool,
               device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(eps, z_g) for the whole global batch of a step, a pure function of (seed, step):
    every rank draws the same tensors and takes its slice, so 1 process x 2B and
    2 processes x B (or 2 micro-batches of B) see identical noise per sample. On CUDA the
    noise is drawn there (its own generator: a copy from the host would wait for the GPU)."""
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    g = torch.Generator(gen_device).manual_seed((seed * 1_000_003 + step) % (2**63))
    eps = torch.randn(global_batch, latent, generator=g, device=gen_device) if vae else None
    z_g = torch.randn(global_batch, latent, generator=g, device=gen_device)
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
    """Algorithm 1 lines 3-6 and 9: each network runs once per input batch (the encoder
    only where there is one, i.e. `eps` is given). The batches are not concatenated:
    separate graphs let the encoder and generator phases back-propagate only through the
    branches their losses touch (e.g. not through D(x) or D(x_g) for L_enc), which saves
    about a fifth of the step (bench/results/step.md)."""
    dec, disc = models["decoder"], models["disc"]
    x_g = dec(z_g.to(x.dtype))
    z_d, rec_d = disc(x)
    z_g_d, rec_g = disc(x_g)
    f = Forward(x=x, x_g=x_g, z_d=z_d, rec_d=rec_d, z_g_d=z_g_d, rec_g=rec_g)
    if eps is not None:
        f.mu, f.logvar = models["encoder"](x)
        f.x_v = dec(reparameterize(f.mu, f.logvar, eps))
        f.z_v_d, f.rec_v = disc(f.x_v)
    return f


# the layout of the statistics vector: the global-batch means of TERMS, then these
# (margin_hit: the share of micro-batches on all ranks whose D push loss.margin stopped;
# bad_ranks: the share of ranks whose gradients were not finite)
EXTRA = ("active_units", "margin_hit", "bad_ranks", "e")


@dataclass
class StepStats:
    """One step's global-batch statistics, still on the training device."""

    values: torch.Tensor  # float64: TERMS, then EXTRA
    k_prev: torch.Tensor
    k: torch.Tensor
    variant: Variant
    cfg: LossConfig
    clamped: torch.Tensor | None = None  # the controller's updates that ended at 0 or 1
    ok: torch.Tensor | None = None  # the guard's verdict (None: no guard)
    skipped: torch.Tensor | None = None  # the guard's count of skipped steps so far
    margin_steps: torch.Tensor | None = None  # the sum of margin_hit over the steps so far

    def host(self, also: dict[str, torch.Tensor] | None = None) -> dict[str, float | None]:
        """The statistics as Python floats, and the scalar device tensors of `also` under
        their names, in one device-to-host copy: the variant's unused terms are None; M is
        the convergence measure."""
        named = {"k_prev": self.k_prev, "k": self.k}
        if self.clamped is not None:
            named["k_clamped_steps"] = self.clamped
        if self.margin_steps is not None:
            named["margin_steps"] = self.margin_steps
        if self.ok is not None:
            named["skipped_steps"], named["skipped"] = self.skipped, ~self.ok
        named.update(also or {})
        tail = torch.stack([v.to(self.values.dtype).reshape(()) for v in named.values()])
        vals = torch.cat([self.values, tail]).tolist()
        n = len(TERMS)
        out: dict = {name: (vals[j] if name in self.variant.terms else None)
                     for j, name in enumerate(TERMS)}
        if self.variant.vae:
            out["active_units"] = vals[n + EXTRA.index("active_units")]
        out["margin_hit"] = vals[n + EXTRA.index("margin_hit")]
        out["e"] = vals[n + EXTRA.index("e")]
        out.update(zip(named, vals[len(self.values):], strict=True))
        for key in ("k_clamped_steps", "skipped_steps"):  # margin_steps: a sum of shares
            if key in out:
                out[key] = int(out[key])
        if "skipped" in out:
            out["skipped"] = bool(out["skipped"])
        out["M"] = convergence(out["L_d"], out["e"])
        return out


class TrainStep:
    """The variant's phases, each with its own loss and optimiser, run through `engine`
    (backward, gradient sync and optimiser steps; see engine.py)."""

    def __init__(self, engine: Engine, controller: PIDController, variant: Variant,
                 loss_cfg: LossConfig, latent: int, seed: int, guard: GuardState | None = None):
        self.engine, self.controller, self.variant = engine, controller, variant
        self.cfg, self.latent, self.seed = loss_cfg, latent, seed
        self.guard = guard  # the divergence guard's counters, or None: no guard
        self.phases = list(variant.phases)
        # test-only fault injection (tests/test_guard.py): `fault(step, x)` may poison x
        self.fault = None
        self.margin_steps: torch.Tensor | None = None  # monitoring (the health monitor)

    def __call__(self, micro_batches: list[torch.Tensor], step: int) -> StepStats:
        """One optimiser step over `micro_batches` (this rank's share of the global batch)."""
        eng, ctrl = self.engine, self.controller
        k_prev = ctrl.k
        k_loss = k_prev.float()  # the losses are fp32
        n_micro = len(micro_batches)
        b = micro_batches[0].shape[0]
        world, rank = dist.world_size(), dist.rank()
        device = micro_batches[0].device
        if eng.cuda_graphs:  # a new step: the graphs' outputs of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        eps_all, zg_all = step_noise(self.seed, step, b * world * n_micro, self.latent,
                                     self.variant.vae, device)
        eng.zero_grad()
        sums = torch.zeros(len(TERMS) + 2, dtype=torch.float64, device=device)
        zero = torch.zeros((), device=device)
        for m, x in enumerate(micro_batches):
            lo = (m * world + rank) * b  # this micro-batch's slice of the global batch
            if self.fault is not None:
                x = self.fault(step, x)
            eps = eps_all[lo:lo + b] if eps_all is not None else None
            with eng.sync(last=m == n_micro - 1):
                with eng.autocast():
                    f = shared_forward(eng.modules, x, eps, zg_all[lo:lo + b])
                terms = self.variant.losses(f, self.cfg, k_loss)
                for i, (name, loss_name) in enumerate(self.phases):
                    last = i == len(self.phases) - 1
                    eng.backward(name, terms[loss_name] / n_micro, retain_graph=not last)
            units = active_units(f.mu) if f.mu is not None else zero
            sums += torch.stack([terms[t].detach() if t in terms else zero for t in TERMS]
                                + [units, terms.get("margin_hit", zero)]).double()
            eng.after_micro(last=m == n_micro - 1)
        bad = zero
        if self.guard is not None and eng.checks_grads:
            params = [p for mod in eng.raw.values() for p in mod.parameters()]
            bad = (~grads_finite(params)).float()
        # one fused all-reduce of every statistic: global-batch means on every rank
        means = dist.all_reduce_mean(torch.cat([sums / n_micro, bad.double().reshape(1)]))
        ok = None
        if self.guard is not None:  # decided from global values: the same on every rank
            ok = torch.isfinite(means).all() & (means[-1] == 0)
            self.guard.record(ok)
        eng.step(ok)
        k = ctrl.update(means[0], means[1], means[2], apply=ok)
        hit = means[len(TERMS) + EXTRA.index("margin_hit")]
        self.margin_steps = hit if self.margin_steps is None else self.margin_steps + hit
        return StepStats(torch.cat([means, ctrl.e1.reshape(1)]), k_prev, k, self.variant,
                         self.cfg, ctrl.clamped, ok,
                         None if self.guard is None else self.guard.skipped,
                         self.margin_steps)
