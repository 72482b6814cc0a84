"""kill -9 at random moments, half of them while a checkpoint is being written: the next
run always resumes from a complete checkpoint, no folder under a final name is ever
half-written, and the run finishes with the weights of an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import procs
from vaegan_dist import checkpoint as ckpt

from .resume_utils import ROOT, assert_same_training_state, env, final_state, run, train_cmd

STEPS = 80


def _check_folders(run_dir: Path) -> Path | None:
    root = run_dir / "checkpoints"
    if not root.exists():
        return None
    for p in root.glob("step-*"):
        assert (p / ckpt.MARKER).exists(), f"half-written folder under a final name: {p}"
        names = {q.name for q in p.iterdir()}
        assert {"state.pt", "weights.safetensors", "rng-rank0.pt"} <= names, (p, names)
        ckpt.load(p)  # readable
    return ckpt.latest(run_dir)


def _newer(path: Path, t: float) -> bool:
    try:
        return path.stat().st_mtime > t
    except FileNotFoundError:
        return False


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if pred():
            return True
        time.sleep(0.005)
    raise AssertionError("timed out waiting for the trainer")


@pytest.mark.slow
@pytest.mark.parametrize("n_kills", [
    pytest.param(10, id="10-kills"),  # the acceptance run, >= 10
])
def test_kill_9_at_random_moments_then_resume(tmp_path, n_kills):
    rng = random.Random(1234 + n_kills)
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, STEPS, "--ckpt-every", "3", overrides=("train.keep=2",))
    kills = mid_write = 0
    prev_mid_write = False  # the previous run was killed during a write
    for i in range(n_kills):
        during_write = i % 2 == 1  # the last kill (even n) is during a write
        before = _check_folders(run_dir)
        log = tmp_path / f"log{i}.txt"
        e = env(**({ckpt.DELAY_ENV: "0.4"} if during_write else {}))
        this_mid_write = False
        with open(log, "w") as out:
            t_start = time.time()
            # its own process group, killed whole if the test fails or times out (procs.py)
            with procs.started(cmd, cwd=ROOT, env=e, stdout=out,
                               stderr=subprocess.STDOUT) as proc:
                if during_write:  # this run's temporary folder: state written, no marker yet
                    ok = _wait_for(lambda t=t_start: any(
                        _newer(p / "state.pt", t) and not (p / ckpt.MARKER).exists()
                        for p in (run_dir / "checkpoints").glob(".tmp-step-*")), proc)
                else:
                    ok = _wait_for(lambda f=log: "training " in f.read_text(), proc)
                    time.sleep(rng.uniform(0.0, 0.6))
                if ok and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                    mid_write += during_write
                    this_mid_write = during_write
                procs.wait(proc, timeout=60, log=log)
        text = log.read_text()
        if before is not None:
            assert f"resumed from {before} " in text, text[-2000:]
        if prev_mid_write:  # the previous run's half-written folder was seen and skipped
            assert "ignoring incomplete checkpoint" in text and ".tmp-step-" in text, text
        prev_mid_write = this_mid_write
        _check_folders(run_dir)
        if proc.returncode == 0:
            break
    assert kills == n_kills and mid_write == n_kills // 2, (kills, mid_write)
    leftovers = list((run_dir / "checkpoints").glob(".tmp-step-*"))
    assert leftovers, "a kill during a write leaves a temporary folder (ignored, then removed)"
    r = run(cmd)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ignoring incomplete checkpoint" in r.stdout
    assert not list((run_dir / "checkpoints").glob(".tmp-step-*"))
    straight = tmp_path / "straight"
    r = run(train_cmd(straight, STEPS, "--ckpt-every", "3", overrides=("train.keep=2",)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_training_state(final_state(run_dir), final_state(straight))
