"""A WebDataset pipeline over `vaegan-prep` shards, split over ranks and DataLoader workers.

Every random choice is seeded from (seed, epoch[, rank, worker]), so a run repeats:
- the shard order of epoch e is a permutation seeded by (seed, e), the same on all ranks;
  rank r takes shards r::world of it and worker w of that rank takes every nw-th of those
  (disjoint, and together the whole set, in every epoch);
- samples are shuffled in a buffer seeded by (seed, e, rank, worker), before decoding, so
  skipping (resume) costs no decode;
- `resampled=True` instead draws each worker's shards with replacement (an infinite stream
  with equal work on every rank; shards are then not disjoint across ranks).
The rank and world size are passed in explicitly rather than read by webdataset from the
environment inside the workers (the RANK/WORLD_SIZE pitfall of spawned workers).
Corrupt or truncated shards are skipped with a warning; the count travels with the batches.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..codec import decode

IMAGE_EXTS = ("jpg", "jpeg", "png")


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def shard_plan(n_shards: int, seed: int, epoch: int, rank: int, world: int, worker: int,
               workers: int, resampled: bool = False) -> list[int]:
    """Indices of the shards that (rank, worker) reads in `epoch`."""
    if resampled:
        k = max(1, n_shards // (world * workers))
        return list(_rng(seed, 104729, epoch, rank, worker).integers(0, n_shards, size=k))
    order = _rng(seed, 7919, epoch).permutation(n_shards)
    return [int(i) for i in order[rank::world][worker::workers]]


def _decode(sample: dict) -> tuple[np.ndarray, str]:
    for ext in IMAGE_EXTS:
        if ext in sample:
            return decode(sample[ext], ext), sample["__key__"]
    raise ValueError(f"sample {sample.get('__key__')} has no image")


class ShardStream(IterableDataset):
    """Yields (uint8 images [B, H, W, 3], keys, worker id, error count of this worker)."""

    def __init__(self, shards: list[tuple[str, int]], batch: int, seed: int = 0,
                 rank: int = 0, world: int = 1, shuffle_buffer: int = 1000,
                 epochs: int | None = None, resampled: bool = False, skip_batches: int = 0,
                 drop_last: bool = False):
        self.shards, self.batch, self.seed = shards, batch, seed
        self.rank, self.world, self.buffer = rank, world, shuffle_buffer
        self.epochs, self.resampled, self.skip_batches = epochs, resampled, skip_batches
        self.drop_last = drop_last

    def _handler(self, exn: Exception) -> bool:
        self.errors += 1
        print(f"warning: skipping corrupt shard data ({str(exn)[:200]})", file=sys.stderr,
              flush=True)
        return True

    def _samples(self, epoch: int, worker: int, workers: int, skip: int) -> Iterator[dict]:
        import webdataset as wds

        plan = shard_plan(len(self.shards), self.seed, epoch, self.rank, self.world, worker,
                          workers, self.resampled)
        urls = [{"url": self.shards[i][0]} for i in plan]
        stream = wds.tarfile_to_samples(handler=self._handler)(iter(urls))
        rng = _rng(self.seed, 31337, epoch, self.rank, worker)
        buf: list[dict] = []
        for s in stream:  # a shuffle buffer on the raw bytes
            buf.append(s)
            if len(buf) >= self.buffer:
                j = int(rng.integers(len(buf)))
                buf[j], buf[-1] = buf[-1], buf[j]
                out = buf.pop()
                if skip:
                    skip -= 1
                    continue
                yield out
        rng.shuffle(buf)
        for out in buf[skip:]:
            yield out

    def _epochs(self, worker: int, workers: int) -> Iterator[dict]:
        # this worker's share of the batches to skip, as raw samples
        k = self.skip_batches
        skip = ((k - worker + workers - 1) // workers if k > worker else 0) * self.batch
        epochs = itertools.count() if self.epochs is None else range(self.epochs)
        for e in epochs:
            if self.resampled and k:  # resume of a resampled stream: reseed by the step
                e = (k << 20) + e
            if skip and not self.resampled:  # whole epochs are skipped without reading
                n = sum(self.shards[i][1] for i in shard_plan(
                    len(self.shards), self.seed, e, self.rank, self.world, worker, workers))
                if skip >= n:
                    skip -= n
                    continue
            yield from self._samples(e, worker, workers, skip if not self.resampled else 0)
            skip = 0

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        self.errors = 0
        imgs, keys = [], []
        for s in self._epochs(worker, workers):
            try:
                img, key = _decode(s)
            except Exception as e:  # a corrupt image inside a sound tar
                self._handler(e)
                continue
            imgs.append(img)
            keys.append(key)
            if len(imgs) == self.batch:
                yield torch.from_numpy(np.stack(imgs)), keys, worker, self.errors
                imgs, keys = [], []
        if imgs and not self.drop_last:
            yield torch.from_numpy(np.stack(imgs)), keys, worker, self.errors
