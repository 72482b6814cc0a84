"""How a rank ends (dist.leave): a process that started a process group does everything a
normal exit does (thread pools shut down, non-daemon threads joined, atexit handlers run
once, buffered output written) and exits with its status before the interpreter's teardown,
where gloo's worker threads can abort it (bench/results/exit_race.md); a process that
started none exits normally. dist.leave_at_shutdown does the same at shutdown, after the
caller's own last work (submitit writing the job's result)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests import procs

from .dist_util import ROOT, env

SCRIPT = r"""
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import torch
from vaegan_dist import dist

out, mode = Path(sys.argv[1]), sys.argv[2]


class Teardown:  # a module global's finaliser: runs only in the interpreter's teardown
    def __init__(self, path):
        self.path = path

    def __del__(self):
        self.path.write_text("x")


r = dist.init(60.0, "cpu").rank
keep = Teardown(out / f"teardown{r}")
atexit.register(lambda: (out / f"atexit{r}").open("a").write("x"))  # once: "x"


def late():
    time.sleep(0.3)
    (out / f"thread{r}").write_text("x")


threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it
pool = ThreadPoolExecutor(1)  # an idle worker: only the pool's exit call ends it
pool.submit(int).result()
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4)) \
    if dist.is_initialized() else torch.nn.Linear(4, 4)
model(torch.randn(2, 4)).sum().backward()
dist.all_gather_object(r)
print(f"rank {r} buffered", end="")  # stdout is a file here: block-buffered, not flushed
dist.shutdown()
if mode == "leave":
    sys.exit(dist.leave(7))
dist.leave_at_shutdown(9)
dist.leave_at_shutdown(5)  # the last call's status; then the caller's work, as submitit's
(out / f"result{r}").write_text("x")
if mode == "raise":
    raise ValueError(f"rank {r} failed after the callable")
"""


def _start(tmp_path: Path, stack: contextlib.ExitStack, rank: int, world: int | None,
           port: int, mode: str = "leave") -> subprocess.Popen:
    script = tmp_path / "leave.py"
    script.write_text(SCRIPT)
    e = env()
    if world is not None:
        e.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    log = stack.enter_context(open(tmp_path / f"log{rank}.txt", "w"))
    return stack.enter_context(procs.started([sys.executable, str(script), str(tmp_path), mode],
                                             cwd=ROOT, env=e, stdout=log,
                                             stderr=subprocess.STDOUT))


def _codes(tmp_path: Path, ps: list[subprocess.Popen]) -> list[int]:
    return [procs.wait(p, timeout=120, log=tmp_path / f"log{i}.txt") for i, p in enumerate(ps)]


@pytest.mark.dist
def test_ranks_of_a_group_leave_with_their_status_after_a_normal_exits_work(tmp_path):
    port = procs.free_port()
    with contextlib.ExitStack() as stack:
        codes = _codes(tmp_path, [_start(tmp_path, stack, r, 2, port) for r in range(2)])
    for r in range(2):
        log = _left_before_the_teardown(tmp_path, r)
        assert codes[r] == 7, log


def _left_before_the_teardown(tmp_path: Path, r: int) -> str:
    log = (tmp_path / f"log{r}.txt").read_text()
    assert f"rank {r} buffered" in log
    assert (tmp_path / f"atexit{r}").read_text() == "x", log  # ran, and once
    assert (tmp_path / f"thread{r}").exists()
    assert not (tmp_path / f"teardown{r}").exists()  # left before the teardown
    return log


@pytest.mark.dist
@pytest.mark.parametrize("mode, status", [("shutdown", 5), ("raise", 1)])
def test_leave_at_shutdown_after_the_callers_last_work(tmp_path, mode, status):
    """submitit's flow: the callable returns, its caller writes the result, the process
    exits normally; it leaves at shutdown with the status it was given, or 1 on an
    unhandled exception."""
    port = procs.free_port()
    with contextlib.ExitStack() as stack:
        codes = _codes(tmp_path, [_start(tmp_path, stack, r, 2, port, mode) for r in range(2)])
    for r in range(2):
        log = _left_before_the_teardown(tmp_path, r)
        assert codes[r] == status, log
        assert (tmp_path / f"result{r}").exists()
        assert (f"rank {r} failed after the callable" in log) == (mode == "raise"), log


def test_a_process_without_a_group_exits_normally(tmp_path):
    """The control: with no launcher environment the same script's `dist.leave` returns its
    status, and the exit runs the teardown (so the check above can fail)."""
    with contextlib.ExitStack() as stack:
        code, = _codes(tmp_path, [_start(tmp_path, stack, 0, None, 0)])
    assert code == 7
    assert "rank 0 buffered" in (tmp_path / "log0.txt").read_text()
    for name in ("atexit0", "thread0", "teardown0"):
        assert (tmp_path / name).exists(), name

