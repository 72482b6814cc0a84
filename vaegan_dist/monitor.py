"""What the trainer shows while it runs: the paper's Fig. 4 image grids, a console status
line with an ETA, the health monitor (sample diversity, k at a clamp) and the offline
quality metric every `eval_every_kimg`. Kept out of train.py so the loop only calls a few
methods."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import unwrap
from .images import make_grid, to_uint8


def pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Interleave originals and reconstructions: a0 b0 a1 b1 ..."""
    return torch.stack([a, b], 1).reshape(-1, *a.shape[1:])


@torch.no_grad()
def fig4_grids(models: dict[str, nn.Module], real: torch.Tensor, z: torch.Tensor,
               n: int) -> dict[str, np.ndarray]:
    """Tag -> uint8 grid: G's reconstructions of real images (VAE only), D's reconstructions
    of real and of generated images; each grid alternates image / reconstruction."""
    dec, disc = unwrap(models["decoder"]), unwrap(models["disc"])
    x = real[:n].float()
    nrow = 2 * int(np.ceil(np.sqrt(len(x))))  # pairs per row = images per column
    out = {}
    if "encoder" in models:
        mu, _ = unwrap(models["encoder"])(x)
        out["recon/real_G"] = make_grid(pairs(x, dec(mu)), nrow)
    out["recon/real_D"] = make_grid(pairs(x, disc(x)[1]), nrow)
    fake = dec(z[:n])
    out["recon/fake_D"] = make_grid(pairs(fake, disc(fake)[1]), nrow)
    return out


def cuda_max_alloc_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


class Progress:
    """Console status line: nimg, img/s, k, M and an ETA from the rate since start."""

    def __init__(self, start_step: int, max_steps: int,
                 clock: Callable[[], float] = time.perf_counter):
        self.start, self.max_steps = start_step, max_steps
        self.clock = clock
        self.t0 = clock()

    def eta_s(self, step: int) -> float:
        done = step - self.start
        if done <= 0:
            return float("nan")
        return (self.clock() - self.t0) / done * (self.max_steps - step)

    def line(self, step: int, nimg: int, stats: dict, ips: float) -> str:
        eta = self.eta_s(step)
        eta_s = "--:--:--" if eta != eta else time.strftime("%H:%M:%S", time.gmtime(eta))
        pct = 100.0 * step / max(self.max_steps, 1)
        return (f"step {step:>7d}/{self.max_steps} ({pct:5.1f}%) nimg {nimg:>9d} "
                f"{ips:7.1f} img/s k {stats['k']:.5f} M {stats['M']:.4f} "
                f"L_d {stats['L_d']:.4f} ETA {eta_s}")


class OfflineEval:
    """The offline sanity metric during training: digits-CNN Frechet distance and KID of
    `n` samples from fixed latents against a rolling buffer of the real images trained on."""

    def __init__(self, n: int = 512, seed: int = 0):
        self.n, self.seed = n, seed
        self.buf: list[np.ndarray] = []
        self.count = 0
        self.extractor = None

    def observe(self, x: torch.Tensor) -> None:
        """Keep the first n real images the trainer sees: a fixed reference set that works
        with every data source (in-memory or streaming)."""
        if self.count < self.n:
            imgs = to_uint8(x[: self.n - self.count])
            self.buf.append(imgs)
            self.count += len(imgs)

    @property
    def ready(self) -> bool:
        """Enough real images for covariance statistics (at least 2)."""
        return self.count >= 2

    @torch.no_grad()
    def __call__(self, decoder: nn.Module, latent: int, device: torch.device) -> dict[str, float]:
        from .features import DigitsExtractor
        from .metrics import fid_from_features, kid

        if self.extractor is None:
            self.extractor = DigitsExtractor()
        real = np.concatenate(self.buf)
        g = torch.Generator().manual_seed(self.seed + 777)
        z = torch.randn(len(real), latent, generator=g).to(device)
        fake = to_uint8(torch.cat([unwrap(decoder)(z[i:i + 128]) for i in range(0, len(z), 128)]))
        fr, ff = self.extractor(real)[0], self.extractor(fake)[0]
        return {"fd_digits": fid_from_features(fr, ff),
                "kid_digits": kid(fr, ff, subsets=1, subset_size=len(fr))[0]}


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over all pairs of images (flattened), on x's device."""
    f = x.detach().flatten(1).float()
    n = len(f)
    return torch.cdist(f, f).sum() / max(n * (n - 1), 1)


class Health:
    """The health monitor, read at every log interval with the step's statistics:

    - `diversity`: mean pairwise distance of the fixed-latent samples over that of the
      newest real batch (about 1 for a generator as varied as the data; towards 0 as the
      samples collapse onto one image);
    - `k_at_clamp`: the share of the interval's steps whose k_t ended at 0 or 1 (the
      controller is then not regulating);
    - `margin_share`: the share of the interval's steps in which loss.margin stopped D's
      push on the fakes (near 1: the fakes' energy runs far past the set point);
    - `active_units` (VAE variants) is logged by the step itself.

    It warns once on the console when the diversity is below `collapse_below` after the
    first `warmup_kimg` thousand images (a fresh decoder draws near-constant images), and
    when k_t has sat at 0 for `k_stuck_kimg` thousand images (D never adversarial), each
    again only after recovering."""

    def __init__(self, collapse_below: float, k_stuck_kimg: float, warmup_kimg: float = 0.0,
                 start_step: int = 0):
        self.collapse_below, self.k_stuck = collapse_below, k_stuck_kimg * 1000
        self.warmup = warmup_kimg * 1000
        # the controller counts its clamped updates from its construction (start_step)
        self.prev_clamped, self.prev_step, self.prev_nimg = 0, start_step, 0
        self.prev_margin = 0.0  # the step's margin_steps counter, likewise
        self.stuck_since: int | None = None  # nimg at which k was first seen stuck at 0
        self.collapsed = self.stuck_warned = False

    @torch.no_grad()
    def diversity(self, decoder: nn.Module, z: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """On the device (read with the statistics, in one copy)."""
        fake = decoder(z)
        return mean_pairwise_distance(fake) / mean_pairwise_distance(real).clamp_min(1e-12)

    def update(self, stats: dict, step: int, nimg: int) -> list[str]:
        """Adds `k_at_clamp` and `margin_share` to `stats`; returns the warnings to print."""
        warnings = []
        margin = stats.get("margin_steps")
        if margin is not None and step > self.prev_step:
            stats["margin_share"] = (margin - self.prev_margin) / (step - self.prev_step)
            self.prev_margin = margin
        clamped = stats.get("k_clamped_steps")
        if clamped is not None and step > self.prev_step:  # (not right after a rollback)
            stats["k_at_clamp"] = (clamped - self.prev_clamped) / (step - self.prev_step)
            if stats["k_at_clamp"] >= 1.0 and stats["k"] == 0.0:
                if self.stuck_since is None:  # stuck over the whole interval
                    self.stuck_since = self.prev_nimg
            else:
                self.stuck_since, self.stuck_warned = None, False
            if (self.stuck_since is not None and not self.stuck_warned
                    and nimg - self.stuck_since >= self.k_stuck):
                self.stuck_warned = True
                warnings.append(f"health: k_t has been 0 for {(nimg - self.stuck_since) / 1000:g}"
                                " kimg: D is not adversarial (e_t < 0: see loss.eta and "
                                "loss.error_reading)")
        if clamped is not None:
            self.prev_clamped, self.prev_step = clamped, step
        self.prev_nimg = nimg
        div = stats.get("diversity")
        if div is not None and div == div and nimg >= self.warmup:
            if div < self.collapse_below and not self.collapsed:
                self.collapsed = True
                warnings.append(f"health: the fixed-latent samples are collapsing (diversity "
                                f"{div:.3f} of a real batch's, below {self.collapse_below:g})")
            elif div >= self.collapse_below:
                self.collapsed = False
        return warnings
