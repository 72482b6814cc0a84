"""vaegan-submit on submitit's local executor (no SLURM needed): a 2-task job gets
SIGUSR2 (submitit's pre-timeout/preemption signal) mid-run, checkpoints, requeues itself,
resumes and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launch.submit import TrainJob, make_executor, parse_args, requeue_shielded
from launch.submit import main as submit_main
from tests import procs

from .resume_utils import (
    STRAIGHT_STEPS,
    assert_same_training_state,
    cli_args,
    env,
    final_state,
    straight_two_procs,
)

STEPS = STRAIGHT_STEPS


def _children(pid: int) -> list[int]:
    out = []
    for tid in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (tid / "children").read_text().split()]
    return out


def _logged_steps(run_dir: Path) -> int:
    f = run_dir / "stats.jsonl"
    return len(f.read_text().splitlines()) if f.exists() else 0


@pytest.mark.dist
@pytest.mark.slow
def test_local_executor_two_tasks_preempted_requeues_and_matches(tmp_path, monkeypatch):
    for k, v in env().items():
        monkeypatch.setenv(k, v)
    run_dir = tmp_path / "run"
    args = cli_args(run_dir, STEPS, "--ckpt-every", "100")
    a = parse_args(["--cluster", "local", "--tasks-per-node", "2", "--time", "10",
                    "--folder", str(tmp_path / "submitit"), "--", *args])
    ex = make_executor(a, Path(a.folder))
    job = ex.submit(TrainJob(a.train_args, "vaegan_dist.cli.train:main"))
    # submitit starts the job in pytest's own process group: kill its tree if the test fails
    with procs.tree_killed_on_failure(job._process.pid):
        t0 = time.monotonic()
        while _logged_steps(run_dir) < 5:
            assert not job.done(), job.stderr()
            assert time.monotonic() - t0 < 240, "job too slow"
            time.sleep(0.05)
        tasks = _children(job._process.pid)
        assert len(tasks) == 2
        for pid in tasks:
            os.kill(pid, signal.SIGUSR2)
        t0 = time.monotonic()
        while not job.done():  # bounded: job.results() alone waits forever
            if time.monotonic() - t0 > 300:
                procs.kill_tree(job._process.pid)
                pytest.fail("submitit job still running 300 s after the signal (killed); "
                            f"its stderr:\n{procs.tail(job.stderr())}", pytrace=False)
            time.sleep(0.2)
        results = job.results()
    assert results[0] == 0, results
    logs = "\n".join(p.read_text() for p in Path(a.folder).glob("*.out"))
    assert "stopping at step" in logs and "resumed from" in logs, logs[-3000:]
    assert_same_training_state(final_state(run_dir), straight_two_procs())


def test_submit_cli_errors_are_one_line(tmp_path, capsys):
    assert submit_main(["--cluster", "local"]) == 2
    assert "no vaegan-train arguments" in capsys.readouterr().err
    assert submit_main(["--cluster", "local", "--partition", "gpu", "--",
                        *cli_args(tmp_path, 2)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "vaegan-submit: error: --partition/--account need SLURM (--cluster slurm)"
    assert submit_main(["--cluster", "local", "--", "--config", "nope-preset"]) == 2
    assert "bad vaegan-train arguments" in capsys.readouterr().err


def test_checkpoint_resubmits_the_same_arguments():
    job = TrainJob(["--config", "tiny", "--max-steps", "7"], "vaegan_dist.cli.train:main")
    again = job.checkpoint()
    assert again.function is not job and again.function.train_args == job.train_args
    assert again.function.entry == job.entry and again.args == () and again.kwargs == {}


def test_requeue_survives_the_sigterm_that_slurm_sends_for_it():
    """SLURM answers `scontrol requeue` with SIGTERM to every process of the job, the
    scontrol included: a child started by the requeue that gets it must not die of it (CI
    saw "Command '['scontrol', 'requeue', '52']' died with SIGTERM")."""
    children = []

    def requeue(signum, frame):  # what submitit's handler does, a racing SIGTERM included
        assert signum == signal.SIGUSR2
        children.append(subprocess.run(["sh", "-c", "kill -TERM $$; echo alive"],
                                       capture_output=True, text=True, timeout=30))
        raise SystemExit(-1)  # submitit's "exiting gracefully after preemption"

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit):
        requeue_shielded(requeue)
    assert children[0].returncode == 0 and children[0].stdout == "alive\n", children
    assert signal.getsignal(signal.SIGTERM) is before  # restored, also on the exit path
    # the same child outside the shield dies, as the real scontrol did
    died = subprocess.run(["sh", "-c", "kill -TERM $$; echo alive"], capture_output=True,
                          preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    assert died.returncode == -signal.SIGTERM
