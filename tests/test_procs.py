"""The bound every test puts on its child processes (tests/procs.py): a timeout kills the
whole process group (grandchildren included) and fails the test with the command and the
child's last output, instead of leaving it to pytest-timeout's signal."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests import procs

# prints, starts a grandchild in the same group, writes its pid, then hangs
SCRIPT = "echo started; sleep 60 & echo $! > {pid}; sleep 60"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not alive
        return f.read().split(")")[-1].split()[0] != "Z"


def test_run_timeout_kills_the_group_and_fails_with_the_output(tmp_path):
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as e:
        procs.run(["bash", "-c", SCRIPT.format(pid=pidfile)], timeout=2)
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "timed out after 2 s" in msg and "bash -c" in msg and "started" in msg, msg
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_run_returns_like_subprocess_run():
    r = procs.run([sys.executable, "-c", "import sys; print('out'); sys.exit(3)"], timeout=60)
    assert (r.returncode, r.stdout) == (3, "out\n")
    with pytest.raises(subprocess.CalledProcessError):
        procs.run([sys.executable, "-c", "raise SystemExit(1)"], timeout=60, check=True)


def test_started_kills_the_group_when_the_block_fails(tmp_path):
    pidfile = tmp_path / "pid"
    with pytest.raises(AssertionError), procs.started(
            ["bash", "-c", SCRIPT.format(pid=pidfile)], stdout=subprocess.DEVNULL) as p:
        while not pidfile.exists() or not pidfile.read_text().strip():
            time.sleep(0.02)
        raise AssertionError("the test failed while its child ran")
    assert p.poll() is not None
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)
