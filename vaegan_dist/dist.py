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


TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_KEYS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT")


def _complete(env, keys: tuple[str, ...], name: str) -> bool:
    present = [k for k in keys if k in env]
    if present and len(present) != len(keys):
        missing = ", ".join(k for k in keys if k not in env)
        raise RuntimeError(f"partial {name} environment: {missing} unset")
    return bool(present)


def resolve_env(environ: dict | None = None) -> DistEnv:
    """Read the launcher environment from exactly one source: torchrun/accelerate variables
    (RANK...), SLURM task variables (SLURM_PROCID... plus MASTER_ADDR/PORT, e.g. `srun`), or
    none (a single local process). A partly set source is an error. torchrun variables win
    over SLURM ones when both are complete (torchrun started inside an allocation)."""
    env = os.environ if environ is None else environ
    if "RANK" in env or "WORLD_SIZE" in env or "LOCAL_RANK" in env:
        _complete(env, TORCHRUN_KEYS, "torchrun")
        return _checked(DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]),
                                int(env["LOCAL_RANK"]), "torchrun"))
    # a SLURM allocation alone (SLURM_JOB_ID ...) is not a launcher: only task variables count
    if "SLURM_PROCID" in env and _complete(env, SLURM_KEYS, "SLURM"):
        return _checked(DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                                int(env["SLURM_LOCALID"]), "slurm"))
    return DistEnv()


def _checked(e: DistEnv) -> DistEnv:
    if e.world_size < 1 or not 0 <= e.rank < e.world_size or e.local_rank < 0:
        raise RuntimeError(f"bad {e.source} environment: rank {e.rank}, world {e.world_size}, "
                           f"local rank {e.local_rank}")
    return e


def init(timeout_s: float = 600.0) -> DistEnv:
    """Start the process group when launched with several processes (nccl with CUDA, gloo
    otherwise). `timeout_s` bounds every collective, so a dead rank ends the job."""
    global _ENV
    _ENV = resolve_env()
    if _ENV.world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(_ENV.local_rank)
        # init_method env:// reads RANK/WORLD_SIZE: pass them so SLURM tasks need no export
        torch_dist.init_process_group(backend, rank=_ENV.rank, world_size=_ENV.world_size,
                                      timeout=datetime.timedelta(seconds=timeout_s))
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


def all_gather_object(obj):
    """Every rank's `obj` (a list indexed by rank; [obj] for one process)."""
    if not torch_dist.is_initialized() or world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def launcher_mixed_precision() -> str | None:
    """The mixed precision `accelerate launch` was configured with (None outside it)."""
    v = os.environ.get("ACCELERATE_MIXED_PRECISION")
    return v.lower() if v else None
