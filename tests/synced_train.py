"""`vaegan-train` for the multi-process resume tests, with one addition: when the models are
not wrapped in DDP (the distributed module adds that), every gradient is averaged across
ranks by a hook as it is accumulated, so replicas stay identical as they do under DDP.
Exact resume with several processes is only defined for identical replicas (a checkpoint
holds rank 0's models). Run as `python -m tests.synced_train ARGS` or under torchrun."""

from __future__ import annotations

import sys

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from vaegan_dist import train as train_mod
from vaegan_dist.cli.train import main as cli_main

_original_init = train_mod.Trainer.__init__


def _average(p: torch.Tensor) -> None:
    torch_dist.all_reduce(p.grad, op=torch_dist.ReduceOp.SUM)
    p.grad.div_(torch_dist.get_world_size())


def _init(self, cfg) -> None:
    _original_init(self, cfg)
    wrapped = any(isinstance(m, DistributedDataParallel) for m in self.models.values())
    if self.world > 1 and not wrapped:
        for m in self.models.values():
            for p in m.parameters():
                p.register_post_accumulate_grad_hook(_average)


train_mod.Trainer.__init__ = _init


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
