"""SIGTERM / SIGUSR1 / time budget: every rank finishes the step, one checkpoint is
written, the exit code says "requeue me", and re-running ends with the weights of an
uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import procs
from vaegan_dist import checkpoint as ckpt
from vaegan_dist.preempt import REQUEUE_EXIT_CODE, REQUEUE_FILE

from .resume_utils import (
    ROOT,
    STRAIGHT_STEPS,
    assert_same_training_state,
    env,
    final_state,
    run,
    straight_two_procs,
    train_cmd,
)

STEPS = STRAIGHT_STEPS


def _workers(torchrun_pid: int) -> dict[int, int]:
    """rank -> pid of torchrun's worker processes."""
    out = {}
    for tid in Path(f"/proc/{torchrun_pid}/task").iterdir():
        for child in (tid / "children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            ranks = [e for e in environ if e.startswith(b"RANK=")]
            if ranks:
                out[int(ranks[0][5:])] = int(child)
    return out


def _interrupt(run_dir: Path, log: Path, sig: signal.Signals, rank: int, after_step: int,
               nproc: int) -> subprocess.Popen:
    cmd = train_cmd(run_dir, STEPS, "--ckpt-every", "100", nproc=nproc)
    # its own process group (torchrun and its workers), killed whole if the test fails or
    # times out (tests/procs.py)
    with open(log, "w") as out, procs.started(cmd, cwd=ROOT, env=env(), stdout=out,
                                              stderr=subprocess.STDOUT) as proc:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() - t0 < 180, "trainer too slow"
            steps = [int(s) for s in re.findall(r"^step +(\d+)", log.read_text(), re.M)]
            if steps and steps[-1] >= after_step:
                break
            time.sleep(0.02)
        target = proc.pid if nproc == 1 else _workers(proc.pid)[rank]
        os.kill(target, sig)
        procs.wait(proc, timeout=120, log=log)
    return proc


def _stopped_step(run_dir: Path, log: Path) -> int:
    text = log.read_text()
    marker = (run_dir / REQUEUE_FILE).read_text().split()
    step = int(marker[0])
    assert ckpt.latest(run_dir) == ckpt.step_dir(run_dir, step), text[-2000:]
    assert f"stopping at step {step}" in text
    assert step < STEPS
    return step


def _finish_and_compare(run_dir: Path, straight: dict) -> None:
    r = run(train_cmd(run_dir, STEPS, "--ckpt-every", "100", nproc=2))
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (run_dir / REQUEUE_FILE).exists()
    assert_same_training_state(final_state(run_dir), straight)


@pytest.mark.dist
@pytest.mark.slow
def test_sigusr1_to_one_rank_checkpoints_requeues_and_resumes_exactly(tmp_path):
    """SIGUSR1 to rank 1 only: the flag is all-reduced, so rank 0 stops at the same step."""
    run_dir, log = tmp_path / "run", tmp_path / "usr1.txt"
    _interrupt(run_dir, log, signal.SIGUSR1, rank=1, after_step=5, nproc=2)
    _stopped_step(run_dir, log)
    text = log.read_text()
    assert "(SIGUSR1)" in text or "another rank's request" in text
    assert f"exitcode  : {REQUEUE_EXIT_CODE}" in text  # torchrun's report of the workers
    _finish_and_compare(run_dir, straight_two_procs())


@pytest.mark.dist
@pytest.mark.slow
def test_sigterm_twice_to_rank_zero_then_resume_exactly(tmp_path):
    run_dir = tmp_path / "run"
    log1, log2 = tmp_path / "term1.txt", tmp_path / "term2.txt"
    _interrupt(run_dir, log1, signal.SIGTERM, rank=0, after_step=4, nproc=2)
    s1 = _stopped_step(run_dir, log1)
    _interrupt(run_dir, log2, signal.SIGTERM, rank=0, after_step=s1 + 5, nproc=2)
    assert f"resumed from {ckpt.step_dir(run_dir, s1)} " in log2.read_text()
    s2 = _stopped_step(run_dir, log2)
    assert s2 > s1 and "(SIGTERM)" in log2.read_text()
    _finish_and_compare(run_dir, straight_two_procs())


def test_sigterm_single_process_exit_code(tmp_path):
    log = tmp_path / "log.txt"
    proc = _interrupt(tmp_path / "run", log, signal.SIGTERM, rank=0, after_step=3, nproc=1)
    assert proc.returncode == REQUEUE_EXIT_CODE, log.read_text()[-2000:]
    _stopped_step(tmp_path / "run", log)


def test_time_budget_stops_cleanly(tmp_path):
    r = run(train_cmd(tmp_path / "run", 100000, overrides=("train.time_budget_s=1",)))
    assert r.returncode == REQUEUE_EXIT_CODE, r.stderr[-2000:]
    assert "time budget 1s" in r.stdout
    step = int((tmp_path / "run" / REQUEUE_FILE).read_text().split()[0])
    assert final_state(tmp_path / "run")["progress"]["step"] == step > 0


def test_guard_stop_file_and_signal_flag(tmp_path):
    """In-process: an old RUN/STOP is a previous run's and is dropped; a new one stops; a
    signal only sets the flag; handlers are restored afterwards."""
    from vaegan_dist.preempt import STOP_FILE, PreemptGuard

    stop = tmp_path / STOP_FILE
    stop.write_text("")
    os.utime(stop, (time.time() - 3600, time.time() - 3600))
    before = signal.getsignal(signal.SIGUSR1)
    with PreemptGuard(tmp_path) as g:
        assert not stop.exists() and not g.should_stop()
        stop.write_text("")
        assert g.should_stop() and g.reason == "stop file"
    stop.unlink()
    with PreemptGuard(tmp_path) as g:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert g.should_stop() and g.reason == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
