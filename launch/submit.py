"""vaegan-submit: run `vaegan-train` as a submitit job, on SLURM or on this workstation.

    vaegan-submit [--cluster auto|slurm|local] [--nodes N] [--tasks-per-node T]
                  [--gpus-per-node G] [--cpus-per-task C] [--partition P] [--account A]
                  [--time MINUTES] [--signal-delay-s S] [--wait] -- VAEGAN-TRAIN ARGS

Every task runs the trainer in-process with torch.distributed's variables exported by
submitit. Preemption and pre-timeout signals (SIGUSR2 from submitit's `--signal`,
SIGUSR1, SIGTERM) reach every task: the trainer finishes the step, writes a checkpoint on
all ranks together and returns "requeue me"; rank 0 then hands over to submitit, which
calls `TrainJob.checkpoint()` (the same arguments again) and requeues. The requeued job
resumes from the newest complete checkpoint of the run folder. Set MASTER_PORT when
submitting to choose the rendezvous port (default: submitit's, derived from the job id).
submitit's logs go to RUN/submitit/<submission time>/ (a fresh folder per submission: job
ids can repeat)."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_ENTRY = "vaegan_dist.cli.train:main"


def _entry(spec: str) -> Callable[[list[str]], int]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "main")


def _status(code: object) -> int:
    """The process status of SystemExit(code), as the interpreter computes it."""
    return 0 if code is None else code if isinstance(code, int) else 1


def requeue_shielded(requeue: Callable[[int, object], object]) -> None:
    """Call submitit's SIGUSR2 handler (checkpoint, `scontrol requeue`, exit) with SIGTERM
    ignored, so its `scontrol` child inherits the ignore through exec. SLURM answers a requeue
    by sending SIGTERM to every process of the job, that `scontrol` included: one still
    running then died, submitit reported the requeue as failed and wrote an error as the
    job's result, though the job was requeued (seen in CI). This process lets SIGTERM pass
    anyway (submitit's handler only logs it)."""
    if threading.current_thread() is not threading.main_thread():
        requeue(signal.SIGUSR2, None)  # signal dispositions are the main thread's to set
        return
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        requeue(signal.SIGUSR2, None)
    finally:
        if old is not None:  # None: a handler set outside Python, which cannot be restored
            signal.signal(signal.SIGTERM, old)


class TrainJob:
    """The submitit callable. `checkpoint()` resubmits the very same arguments: all the
    state lives in the run folder's checkpoints, so nothing else needs carrying over."""

    def __init__(self, train_args: list[str], entry: str = DEFAULT_ENTRY):
        self.train_args = list(train_args)
        self.entry = entry

    def __call__(self) -> int:
        import submitit

        from vaegan_dist import dist
        from vaegan_dist.preempt import REQUEUE_EXIT_CODE

        # the job's values win over any left in the submitting shell (sbatch exports it);
        # MASTER_PORT from there is kept: submitit's default, Random(job id) in 20000-60000,
        # can hit a port in use on the first node
        env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True)
        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's checkpoint-and-requeue
        # the process ends as vaegan-train's do (dist.leave: out of reach of gloo's exit
        # race), once submitit is done with it, with the status submitit gives it
        try:
            rc = _entry(self.entry)(self.train_args)
        except BaseException:
            dist.leave_at_shutdown(1)
            raise
        if rc == REQUEUE_EXIT_CODE and env.rank == 0 and callable(requeue):
            try:
                requeue_shielded(requeue)  # checkpoint() + requeue; exits this process
            except SystemExit as e:  # its status says "requeue" to the local executor
                dist.leave_at_shutdown(_status(e.code))
                raise
            except BaseException:  # not requeued (submitit says why)
                dist.leave_at_shutdown(1)
                raise
        dist.leave_at_shutdown(0 if rc in (0, REQUEUE_EXIT_CODE) else 1)
        if rc == REQUEUE_EXIT_CODE:
            return rc  # other ranks: done here, the requeued job starts them again
        if rc != 0:
            raise RuntimeError(f"vaegan-train {' '.join(self.train_args)} exited with {rc}")
        return rc

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(TrainJob(self.train_args, self.entry))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vaegan-submit",
        description="Submit vaegan-train through submitit (SLURM, or a local executor). "
                    "Arguments after -- go to vaegan-train unchanged. MASTER_PORT, when set "
                    "here, is the tasks' rendezvous port (default: submitit's, from the job "
                    "id).")
    p.add_argument("--cluster", default="auto", choices=("auto", "slurm", "local"),
                   help="auto: SLURM where sbatch exists, else local processes")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--tasks-per-node", type=int, default=1, help="processes per node (ranks)")
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=None)
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--time", type=int, default=60, help="time limit in minutes")
    p.add_argument("--signal-delay-s", type=int, default=120,
                   help="SIGUSR2 this many seconds before the limit (checkpoint + requeue)")
    p.add_argument("--name", default="vaegan")
    p.add_argument("--entry", default=DEFAULT_ENTRY, help=argparse.SUPPRESS)  # tests
    p.add_argument("--folder", default=None,
                   help="submitit folder (default RUN/submitit/<submission time>)")
    p.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    p.add_argument("train_args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if a.train_args and a.train_args[0] == "--":
        a.train_args = a.train_args[1:]
    return a


def run_dir_of(train_args: list[str]) -> Path:
    """The run folder vaegan-train will use (CLI flag, override or preset)."""
    from vaegan_dist.cli.train import parse_args as train_parse
    from vaegan_dist.cli.train import require_extras, resolve

    cfg = resolve(train_parse(train_args))
    require_extras(cfg)  # a missing extra is one line here, not a failed job later
    return Path(cfg.run_dir).resolve()


def make_executor(a: argparse.Namespace, folder: Path):
    import submitit

    cluster = a.cluster if a.cluster != "auto" else None
    if a.nodes > 1 and a.cluster == "local":
        raise ValueError("the local executor runs on one node (--nodes 1)")
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = dict(name=a.name, nodes=a.nodes, tasks_per_node=a.tasks_per_node,
                  timeout_min=a.time)
    if a.gpus_per_node:
        params["gpus_per_node"] = a.gpus_per_node
    if a.cpus_per_task:
        params["cpus_per_task"] = a.cpus_per_task
    if ex.cluster == "slurm":
        params.update(slurm_signal_delay_s=a.signal_delay_s)
        if a.partition:
            params["slurm_partition"] = a.partition
        if a.account:
            params["slurm_account"] = a.account
    elif a.partition or a.account:
        raise ValueError("--partition/--account need SLURM (--cluster slurm)")
    ex.update_parameters(**params)
    return ex


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        if not a.train_args:
            raise ValueError("no vaegan-train arguments (put them after --)")
        from vaegan_dist.config import ConfigError

        try:
            run_dir = run_dir_of(a.train_args)
        except (ConfigError, SystemExit) as e:
            raise ValueError(f"bad vaegan-train arguments: {e}") from None
        stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**6:06d}"
        folder = Path(a.folder) if a.folder else run_dir / "submitit" / stamp
        ex = make_executor(a, folder)
        job = ex.submit(TrainJob(a.train_args, a.entry))
    except (ValueError, ImportError) as e:
        print(f"vaegan-submit: error: {e}", file=sys.stderr)
        return 2
    print(f"submitted job {job.job_id} ({ex.cluster}); logs in {folder}", flush=True)
    if a.wait:
        try:
            result = job.result()
        except Exception as e:  # noqa: BLE001 - a failed job is reported in one line
            print(f"vaegan-submit: job {job.job_id} failed: {str(e).splitlines()[0]}",
                  file=sys.stderr)
            return 1
        print(f"job {job.job_id} finished: exit {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
