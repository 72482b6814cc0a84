"""All torch.distributed and launcher-environment handling. Nothing else in the package
reads launcher variables. World size 1 runs the same code path as world size N: the
collectives below are identities when no process group is initialised."""

from __future__ import annotations

import atexit
import datetime
import os
import sys
import threading
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
_DEVICE: torch.device | None = None  # the training device (collective tensors live there)
_STARTED = False  # init() started a process group in this process (see `leave`)
_AT_SHUTDOWN: dict[str, int] = {}  # leave_at_shutdown's status, once registered
# Strict mode (on in the test suite): every tensor handed to a collective must be on the
# training device, the device the backend serves for training (NCCL: CUDA only). A CPU
# tensor in a CUDA run fails under NCCL at the first step; strict mode fails it everywhere.
STRICT_ENV = "VAEGAN_DIST_STRICT"


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


def init(timeout_s: float = 600.0, device: str = "auto") -> DistEnv:
    """Start the process group whenever a launcher started this process (torchrun, SLURM
    tasks, accelerate), even at world size 1, so one process under a launcher runs the
    multi-process code path (collectives, DDP hooks); a plain process stays without a group.
    With CUDA the group is "cpu:gloo,cuda:nccl": NCCL for the training tensors and gloo for
    the few CPU-side collectives (object gathers, barriers). `device` is the training
    device (`device_for(device)`, then `dist.device()`) that every collective tensor must
    live on (checked in strict mode). `timeout_s` bounds every collective, so a dead rank
    ends the job."""
    global _ENV, _DEVICE, _STARTED
    _ENV = resolve_env()
    _DEVICE = device_for(device)
    if _ENV.source != "local" and not torch_dist.is_initialized():
        backend = "gloo"
        if _DEVICE.type == "cuda":
            torch.cuda.set_device(_ENV.local_rank)
            backend = "cpu:gloo,cuda:nccl"
        # init_method env:// reads RANK/WORLD_SIZE: pass them so SLURM tasks need no export
        torch_dist.init_process_group(backend, rank=_ENV.rank, world_size=_ENV.world_size,
                                      timeout=datetime.timedelta(seconds=timeout_s))
        _STARTED = True
    return _ENV


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()  # avoids rank 0 aborting at exit while others still talk
        torch_dist.destroy_process_group()


def leave(code: int) -> int:
    """End a process that started a process group with exit status `code`; in one that
    started none (a plain run, a test calling an entry point in-process) just return `code`.

    Why not a plain return: DDP (torch 2.13) keeps references to the process group after
    `destroy_process_group`, so gloo's worker threads outlive it. One still freeing a
    finished collective's tensors (the last checkpoint's all-gather) while the interpreter
    tears itself down needs the GIL, cannot have it, and kills the rank with SIGABRT
    ("terminate called without an active exception"; core dump backtrace in
    bench/results/exit_race.md, and CI failed on it). So this does what a normal exit does
    before the teardown (the threading module's exit calls, e.g. thread pools' shutdown;
    non-daemon threads joined; the atexit handlers; the streams flushed) and then ends the
    process with os._exit, skipping the teardown. Call it after `shutdown`: everything the
    run wrote is closed by then."""
    if not _STARTED:
        return code
    _exit_now(code)
    return code  # not reached


def _exit_now(code: int, skip: object = None) -> None:
    for call in reversed(list(getattr(threading, "_threading_atexits", ()))):
        if call is not skip:
            call()
    for t in threading.enumerate():
        if t is not threading.main_thread() and t is not threading.current_thread() \
                and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


def leave_at_shutdown(code: int) -> None:
    """`leave`, deferred to the interpreter's shutdown, for a callable whose caller still has
    work to do after it returns: submitit writes the job's result after TrainJob returns,
    and its process then exits normally, into the same race. At shutdown (after the main
    module is done, before the teardown) the process ends as `leave` ends it, with `code`
    (the last call's), or 1 if an exception went unhandled (its traceback is printed
    before). A SystemExit raised after this call is not seen: its status becomes `code`."""
    if not _STARTED:
        return
    first = "code" not in _AT_SHUTDOWN
    _AT_SHUTDOWN["code"] = code
    register = getattr(threading, "_register_atexit", None)
    if not first or register is None:  # registered already, or no such hook: a normal exit
        return

    def at_shutdown() -> None:
        # PyErr_Print sets sys.last_value (3.12+: also last_exc) for an unhandled exception
        failed = getattr(sys, "last_value", None) is not None
        _exit_now(1 if failed else _AT_SHUTDOWN["code"], skip=mine)

    register(at_shutdown)  # threading's exit calls run newest first: ours runs the others
    mine = threading._threading_atexits[-1]


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


class CollectiveDeviceError(RuntimeError):
    """A tensor handed to a collective is not on the training device (strict mode)."""


def _check_device(t: torch.Tensor, op: str) -> None:
    if _DEVICE is not None and os.environ.get(STRICT_ENV) == "1" and t.device != _DEVICE:
        raise CollectiveDeviceError(f"{op}: tensor on {t.device}, training device {_DEVICE} "
                                    "(NCCL serves CUDA tensors only)")


def device() -> torch.device:
    """The training device chosen by `init` (the CPU before it)."""
    return _DEVICE or torch.device("cpu")


def is_initialized() -> bool:
    return torch_dist.is_initialized()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a copy; identity without a process group)."""
    _check_device(t, "all_reduce_mean")
    out = t.clone()
    if torch_dist.is_initialized():
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
        out = out / world_size()
    return out


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over ranks (a copy; identity without a process group)."""
    _check_device(t, "all_reduce_max")
    out = t.clone()
    if torch_dist.is_initialized():
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.MAX)
    return out


def device_for(kind: str) -> torch.device:
    """`auto` -> this rank's CUDA device where there is one, else the CPU."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        return torch.device("cuda", local_rank())
    return torch.device(kind)


def all_gather_object(obj):
    """Every rank's `obj` (a list indexed by rank; [obj] without a process group)."""
    if not torch_dist.is_initialized():
        return [obj]
    out: list = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def launcher_mixed_precision() -> str | None:
    """The mixed precision `accelerate launch` was configured with (None outside it)."""
    v = os.environ.get("ACCELERATE_MIXED_PRECISION")
    return v.lower() if v else None
