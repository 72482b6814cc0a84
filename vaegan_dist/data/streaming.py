"""Streaming sources for the trainer (`data.source = wds | ffcv`), reading the output of
`vaegan-prep shard|synth`. Same interface as the in-memory sources:
`micro_batches(step) -> list[Tensor]` (this rank's `accum` micro-batches of `batch`
images, float NCHW in [-1, 1] on the device).

Resume. A stream cannot seek to a step, so the position is re-derived: after K = step x
accum batches of this rank, the WebDataset source restarts its stream and skips K batches
(whole epochs are skipped from the manifest's shard counts without reading; inside the
current epoch the raw samples are skipped before decoding). With unchanged world size,
workers, batch and seed this gives exactly the batches an uninterrupted run would have
seen. A resampled stream reseeds by (seed, K) instead. The FFCV source sets its epoch to
K // batches-per-epoch and skips the rest. `state_dict()` records the settings the replay
depends on; `load_state_dict` warns when they changed (the replay is then approximate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ..config import Config
from . import SourceState, to_float


def find_shards(path: str, split: str, size: int) -> list[tuple[str, int]]:
    """(tar path, sample count) of a split and size, from the folder's manifest.json."""
    root = Path(path)
    man = root / "manifest.json"
    if not man.is_file():
        raise FileNotFoundError(f"{man} not found: shard the data with `vaegan-prep shard` "
                                "(or `vaegan-prep synth`) first")
    m = json.loads(man.read_text())
    sp = m["splits"].get(split)
    if sp is None:
        raise ValueError(f"split '{split}' not in {man} (have: {', '.join(sorted(m['splits']))})")
    sz = sp["sizes"].get(str(size))
    if sz is None:
        raise ValueError(f"no {size}px shards in {man} (sizes: {', '.join(sorted(sp['sizes']))});"
                         f" re-shard with --size {size}")
    if not sz["shards"]:
        raise ValueError(f"{man} has no tar shards (made with --format ffcv?)")
    if (m.get("source", {}).get("kind") in ("folder", "classes")
            and "order" not in m.get("settings", {})):
        print(f"warning: {root} was sharded in path order by an older vaegan-prep (a class or "
              "source folder per run of shards), which the shuffle buffer mixes only partly; "
              "re-shard it for well-mixed batches", file=sys.stderr, flush=True)
    return [(str(root / s["name"]), int(s["count"])) for s in sz["shards"]]


def find_beton(path: str, split: str, size: int) -> str:
    p = Path(path)
    if p.suffix == ".beton":
        return str(p)
    b = p / f"{split}-{size}.beton"
    if not b.is_file():
        raise FileNotFoundError(f"{b} not found: shard with `vaegan-prep ... --format ffcv`")
    return str(b)


class _Replayable(SourceState):
    """Restart-and-skip bookkeeping shared by the streaming sources."""

    def _setup(self, cfg: Config, world: int, rank: int, device: torch.device):
        self.batch, self.accum, self.world = cfg.train.batch, cfg.train.accum, world
        self.seed, self.workers, self.device = cfg.train.seed, cfg.data.workers, device
        self.rank, self._it, self._next_step = rank, None, -1

    def settings(self) -> dict:
        return {"seed": self.seed, "world": self.world, "workers": self.workers,
                "batch": self.batch, "accum": self.accum}

    def micro_batches(self, step: int) -> list[torch.Tensor]:
        if self._it is None or step != self._next_step:
            self._it = self._start(step * self.accum)
        out = [to_float(self._next()).to(self.device, non_blocking=True)
               for _ in range(self.accum)]
        self._next_step = step + 1
        return out


class WdsSource(_Replayable):
    """An endless WebDataset stream (epoch after epoch) through a torch DataLoader."""

    kind = "wds"

    def __init__(self, cfg: Config, world: int, rank: int, device: torch.device):
        self._setup(cfg, world, rank, device)
        d = cfg.data
        self.shards = find_shards(d.path, d.split, cfg.model.resolution)
        self.buffer, self.resampled = d.shuffle_buffer, d.resampled
        nw = max(1, d.workers)
        if not self.resampled:
            if len(self.shards) < world:
                raise ValueError(f"{len(self.shards)} shard(s) for {world} ranks: re-shard with "
                                 "a smaller --shard-size, or set data.resampled=true")
            nw = min(nw, len(self.shards) // world)  # no idle worker (it would stall)
        self.loader_workers = nw if d.workers > 0 else 0
        self.errors_by_worker: dict[int, int] = {}

    @property
    def errors(self) -> int:
        """Corrupt samples/shards skipped so far (all workers of this rank)."""
        return sum(self.errors_by_worker.values())

    def _start(self, skip_batches: int):
        from torch.utils.data import DataLoader

        from .wds_stream import ShardStream

        ds = ShardStream(self.shards, self.batch, seed=self.seed, rank=self.rank,
                         world=self.world, shuffle_buffer=self.buffer, epochs=None,
                         resampled=self.resampled, skip_batches=skip_batches, drop_last=True)
        nw = self.loader_workers
        dl = DataLoader(ds, batch_size=None, num_workers=nw, persistent_workers=False,
                        prefetch_factor=4 if nw else None)
        return iter(dl)

    def _next(self) -> torch.Tensor:
        imgs, _keys, worker, errors = next(self._it)
        if errors > self.errors_by_worker.get(worker, 0):
            self.errors_by_worker[worker] = errors
        return imgs


class FfcvSource(_Replayable):
    """FFCV's Loader over a .beton (random order seeded by train.seed, per epoch)."""

    kind = "ffcv"

    def __init__(self, cfg: Config, world: int, rank: int, device: torch.device):
        from .ffcv_loader import make_loader

        self._setup(cfg, world, rank, device)
        path = find_beton(cfg.data.path, cfg.data.split, cfg.model.resolution)
        self.loader = make_loader(path, self.batch, max(1, self.workers), self.seed,
                                  distributed=world > 1)
        self.per_epoch = len(self.loader)
        if self.per_epoch == 0:
            raise ValueError(f"{path}: fewer images than one batch per rank")

    def _start(self, skip_batches: int):
        self.loader.next_epoch = skip_batches // self.per_epoch
        rest = skip_batches % self.per_epoch

        def gen():
            first = True
            while True:
                for i, (imgs, *_rest) in enumerate(self.loader):
                    if first and i < rest:
                        continue
                    yield imgs
                first = False

        return gen()

    def _next(self) -> torch.Tensor:
        return next(self._it)


def build_streaming_source(cfg: Config, world: int, rank: int, device: torch.device):
    """The source for data.source = wds | ffcv."""
    cls = WdsSource if cfg.data.source == "wds" else FfcvSource  # validated by config.py
    return cls(cfg, world, rank, device)
