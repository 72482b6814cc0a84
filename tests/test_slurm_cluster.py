"""The SLURM path against a real one-node SLURM on localhost (slurm/cluster-up.sh, root,
Debian): the sbatch templates (configs/slurm/) (single node; multi node on one node through the c10d
rendezvous) and vaegan-submit on SLURM, each with a 2-process job that is preempted by a
signal, requeues, resumes and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from launch.submit import TrainJob, make_executor, parse_args
from tests import procs
from vaegan_dist.config import config_dir

from .resume_utils import (
    ROOT,
    STRAIGHT_STEPS,
    assert_same_training_state,
    cli_args,
    env,
    final_state,
    straight_two_procs,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
STEPS = STRAIGHT_STEPS


def _sh(*cmd: str) -> str:
    return procs.run(cmd, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def slurm_cluster():
    """Use a running local cluster, or start one (root) and stop it afterwards by pid file."""
    up = procs.run(["sinfo", "-h"], timeout=60).returncode == 0 if _which("sinfo") else False
    if not up:
        r = procs.run(["bash", str(ROOT / "slurm" / "cluster-up.sh")], timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    yield
    if not up:
        procs.run(["bash", str(ROOT / "slurm" / "cluster-down.sh")], timeout=120)


def _which(name: str) -> bool:
    return any((Path(d) / name).exists() for d in os.environ.get("PATH", "").split(":"))


def _state(job_id: str) -> str:
    s = _sh("squeue", "-h", "-j", job_id, "-o", "%T")
    return s or _sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").split("\n")[0]


def _wait(pred, what: str, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.25)


def _wait_progress(run_dir: Path, job_id: str, log: Path) -> None:
    """At least 5 logged steps; fails at once, with the job's log, if the job ends first."""
    def ready() -> bool:
        if _logged_steps(run_dir) >= 5:
            return True
        state = _state(job_id)
        if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", ""):
            return False
        assert _logged_steps(run_dir) >= 5, (  # it may have logged since the first look
            f"job {job_id} is {state} before training progressed:\n"
            + (procs.tail(log.read_text()) if log.exists() else "(no log)"))
        return True

    _wait(ready, "training progress")


def _logged_steps(run_dir: Path) -> int:
    f = run_dir / "stats.jsonl"
    return len(f.read_text().splitlines()) if f.exists() else 0


def _release_requeued(job_id: str) -> None:
    """SLURM holds a requeued job ~120 s (BeginTime); start it now."""
    _wait(lambda: _state(job_id) in ("PENDING", "REQUEUED"), f"job {job_id} requeued")
    # release only once the old instance is cleaned up ("Job credential revoked" otherwise)
    _wait(lambda: _sh("sinfo", "-h", "-o", "%T") == "idle", "the node idle again")
    time.sleep(2)
    _wait(lambda: (_sh("scontrol", "update", f"jobid={job_id}", "StartTime=now") or True)
          and _state(job_id) != "PENDING", f"job {job_id} restarted", timeout=120)


def _sbatch(script: str, run_dir: Path, *extra_sbatch: str) -> str:
    e = env(RUN_DIR=str(run_dir), NPROC="2", VAEGAN_PYTHON=str(Path(os.sys.executable)),
            VAEGAN_TRAIN_MODULE="vaegan_dist.cli.train", RDZV_PORT=str(procs.free_port()))
    args = cli_args(run_dir, STEPS, "--ckpt-every", "100")
    i = args.index("--run-dir")
    del args[i:i + 2]  # the script adds --run-dir "$RUN_DIR"
    r = procs.run(["sbatch", "--parsable", *extra_sbatch, str(config_dir() / "slurm" / script),
                   *args], cwd=run_dir.parent, env=e, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split(";")[0]


@pytest.mark.parametrize("script,extra", [("train-single.sbatch", ()),
                                          ("train-multi.sbatch", ("--nodes=1",))])
def test_sbatch_job_preempted_requeues_and_matches(slurm_cluster, tmp_path, script, extra):
    run_dir = tmp_path / "run"
    job = _sbatch(script, run_dir, *extra)
    _wait_progress(run_dir, job, run_dir / "logs" / f"sbatch-{job}.log")
    _sh("scancel", "--signal=USR1", "--batch", job)  # what --signal=B:USR1@T sends
    _release_requeued(job)
    _wait(lambda: _state(job) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), "the end")
    log = (run_dir / "logs" / f"sbatch-{job}.log").read_text()
    assert _state(job) == "COMPLETED", log[-3000:]
    assert "requeue" in log and "restart 1" in log and "resumed from" in log, log[-3000:]
    assert_same_training_state(final_state(run_dir), straight_two_procs())


def _slow_requeue(folder: Path) -> dict[str, str]:
    """A PATH where `scontrol requeue` outlives SLURM's answer to it by 3 s (still less than
    KillWait): the SIGTERM that SLURM sends to every process of a requeued job then always
    reaches it while it runs, as it did by chance in CI (and killed it)."""
    real = shutil.which("scontrol")
    folder.mkdir(parents=True)
    wrapper = folder / "scontrol"
    wrapper.write_text(f'#!/bin/bash\n"{real}" "$@"; rc=$?\n'
                       '[ "$1" = requeue ] && sleep 3\nexit $rc\n')
    wrapper.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def test_submitit_slurm_two_tasks_preempted_requeues_and_matches(slurm_cluster, tmp_path,
                                                                monkeypatch):
    # a free port: submitit's default (Random(job id)) once collided with a port in use
    for k, v in env(MASTER_PORT=str(procs.free_port()), **_slow_requeue(tmp_path / "bin")
                    ).items():
        monkeypatch.setenv(k, v)
    run_dir = tmp_path / "run"
    a = parse_args(["--cluster", "slurm", "--tasks-per-node", "2", "--cpus-per-task", "1",
                    "--time", "30", "--folder", str(tmp_path / "submitit"), "--",
                    *cli_args(run_dir, STEPS, "--ckpt-every", "100")])
    ex = make_executor(a, Path(a.folder))
    job = ex.submit(TrainJob(a.train_args, "vaegan_dist.cli.train:main"))
    _wait_progress(run_dir, job.job_id, Path(a.folder) / f"{job.job_id}_0_log.err")
    _sh("scancel", "--signal=USR2", job.job_id)  # submitit's pre-timeout signal, every task
    _release_requeued(job.job_id)
    _wait(job.done, "the end")  # bounded: job.results() alone waits forever
    results = job.results()
    assert results[0] == 0, results
    logs = "\n".join(p.read_text() for p in Path(a.folder).glob("*_log.*"))
    assert "stopping at step" in logs and "resumed from" in logs, logs[-3000:]
    assert_same_training_state(final_state(run_dir), straight_two_procs())
