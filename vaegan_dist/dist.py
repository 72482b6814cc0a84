"""All torch.distributed and launcher-environment handling. Nothing else in the package
reads launcher variables. World size 1 runs the same code path as world size N: the
collectives below are identities when no process group is initialised."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "local"  # local | torchrun | slurm


_ENV = DistEnv()


def resolve_env(environ: dict | None = None) -> DistEnv:
    """Read the launcher environment from exactly one source: torchrun/accelerate variables,
    or none (a single local process). A partly set torchrun environment is an error."""
    env = os.environ if environ is None else environ
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    present = [k for k in keys if k in env]
    if present and len(present) != len(keys):
        missing = ", ".join(k for k in keys if k not in env)
        raise RuntimeError(f"partial launcher environment: {missing} unset")
    if present:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]),
                       "torchrun")
    return DistEnv()


def init(timeout_s: float = 600.0) -> DistEnv:
    """Start the process group when launched with several processes (nccl with CUDA, gloo
    otherwise). `timeout_s` bounds every collective, so a dead rank ends the job."""
    global _ENV
    _ENV = resolve_env()
    if _ENV.world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(_ENV.local_rank)
        torch_dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return _ENV


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()  # avoids rank 0 aborting at exit while others still talk
        torch_dist.destroy_process_group()


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_initialized() else 1


def local_rank() -> int:
    return _ENV.local_rank


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy; identity for one process)."""
    if not torch_dist.is_initialized() or world_size() == 1:
        return t.clone()
    out = t.clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out / world_size()


def device_for(kind: str) -> torch.device:
    """`auto` -> this rank's CUDA device where there is one, else the CPU."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        return torch.device("cuda", local_rank())
    return torch.device(kind)
