"""One loader interface for the trainer, selected by `data.source`.

A source hands the trainer this rank's micro-batches for an optimiser step:
`source.micro_batches(step) -> list[Tensor]`, float NCHW in [-1, 1] on the device. The
in-memory sources below place the global batch of step t at positions [t*G, (t+1)*G) of
an endless stream of (seed, epoch)-seeded permutations, with G = batch x accum x world and
micro-batch m of rank r at slice (m*world + r)*batch: the data position is a pure function
of the step, so resume and changes of world size or accumulation see the same images."""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
import torch

from ..config import Config
from . import synthetic


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1] (zero-centred, as the paper)."""
    return images_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class SourceState:
    """A data source's part of a checkpoint: the settings its data order depends on. The
    order itself is re-derived from (seed, step) on resume, so loading only compares: a
    changed setting means the resumed run sees another order than an uninterrupted one
    would have, and rank 0 says so in one warning."""

    kind = "source"
    rank = 0

    def settings(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"kind": self.kind, **self.settings()}

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:  # a checkpoint from before sources were saved
            return
        changed = [f"{k} {state.get(k)} -> {v}" for k, v in self.state_dict().items()
                   if state.get(k) != v]
        if changed and self.rank == 0:
            print(f"warning: data settings changed since the checkpoint ({', '.join(changed)}):"
                  " the resumed data order is re-derived, not replayed", file=sys.stderr,
                  flush=True)


class InMemorySource(SourceState):
    """uint8 NHWC images held in memory."""

    kind = "memory"

    def __init__(self, images: np.ndarray, seed: int, batch: int, accum: int, world: int,
                 rank: int, device: torch.device):
        if len(images) == 0:
            raise ValueError("the dataset is empty")
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.seed, self.batch, self.accum = seed, batch, accum
        self.world, self.rank, self.device = world, rank, device
        self.global_batch = batch * accum * world

    def settings(self) -> dict:
        return {"images": len(self.images), "seed": self.seed, "batch": self.batch,
                "accum": self.accum, "world": self.world}

    @lru_cache(maxsize=4)  # noqa: B019 - a few epochs' permutations, per source
    def _perm(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 7919, epoch]))
        return rng.permutation(len(self.images))

    def global_indices(self, step: int) -> np.ndarray:
        n = len(self.images)
        pos = np.arange(step * self.global_batch, (step + 1) * self.global_batch)
        out = np.empty_like(pos)
        for e in np.unique(pos // n):
            sel = pos // n == e
            out[sel] = self._perm(int(e))[pos[sel] % n]
        return out

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        idx = self.global_indices(step)
        b = self.batch
        out = []
        for m in range(self.accum):
            lo = (m * self.world + self.rank) * b
            sel = torch.from_numpy(idx[lo:lo + b])
            out.append(to_float(self.images[sel]).to(self.device, non_blocking=True))
        return out


def build_source(cfg: Config, world: int, rank: int, device: torch.device):
    """The data source named by `cfg.data.source`."""
    d, t, r = cfg.data, cfg.train, cfg.model.resolution
    if d.source == "synthetic":
        images, _attrs = synthetic.make_dataset(d.num_images, r, d.data_seed)
    elif d.source == "folder":
        from .folder import load_folder

        images = load_folder(d.path, r)
    else:
        from .streaming import build_streaming_source

        return build_streaming_source(cfg, world, rank, device)
    return InMemorySource(images, t.seed, t.batch, t.accum, world, rank, device)
