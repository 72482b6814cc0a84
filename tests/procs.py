"""Child processes of the tests, bounded by the tests themselves.

Every command starts in its own process group (`start_new_session=True`) and is waited for
with a timeout. When the timeout passes, or the test fails or is interrupted while the
child runs, the WHOLE group is killed (torchrun's workers, a Pool's workers, a shell's
children), and a timeout FAILS the test (`pytest.fail`) with the command and the child's
last output lines. So a slow or loaded machine gives a failed test with a reason, never a
pytest-timeout signal inside pytest (which can crash the session) or a leaked process.
pytest-timeout (pyproject.toml) stays only as a last resort, well above these bounds."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

TAIL_LINES = 40


def free_port() -> int:
    """A TCP port free on localhost now (for a rendezvous or MASTER_PORT): tests running in
    parallel must not share torchrun's default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group, then reap the child (bounded)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass


def tail(*texts: str | bytes | None, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of the given outputs, one after the other."""
    out = []
    for t in texts:
        if not t:
            continue
        if isinstance(t, bytes):
            t = t.decode(errors="replace")
        out.extend(t.splitlines()[-lines:])
    return "\n".join(out[-2 * lines:])


def fail_timeout(cmd: Sequence[str] | str, timeout: float, output: str) -> None:
    c = cmd if isinstance(cmd, str) else shlex.join(str(a) for a in cmd)
    pytest.fail(f"child process timed out after {timeout:.0f} s (its process group was "
                f"killed): {c}\n--- last output ---\n{output}", pytrace=False)


def run(cmd: Sequence[str], *, timeout: float, cwd: str | Path | None = None,
        env: dict | None = None, input: str | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)`, bounded as the module says."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, text=True, start_new_session=True,
                         stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        try:  # what the child printed before it was killed
            out, err = p.communicate(timeout=15)
        except (subprocess.TimeoutExpired, ValueError):
            out, err = "", "(output not readable: a process outside the group holds the pipe)"
        fail_timeout(cmd, timeout, tail(out, err))
    except BaseException:
        kill_group(p)
        raise
    if check and p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, list(cmd), out, err)
    return subprocess.CompletedProcess(list(cmd), p.returncode, out, err)


@contextlib.contextmanager
def started(cmd: Sequence[str], **kw) -> Iterator[subprocess.Popen]:
    """A long-lived child (`subprocess.Popen(cmd, **kw)` in its own process group) that the
    test drives itself; when the block is left by an exception (a failed assertion, an
    interrupt, a timeout), the whole group is killed."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        yield p
    except BaseException:
        kill_group(p)
        raise


def wait(p: subprocess.Popen, timeout: float, log: Path | None = None) -> int:
    """`p.wait(timeout)`; on timeout kill the group and fail with the last lines of `log`
    (where the child's output went)."""
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        text = log.read_text(errors="replace") if log is not None and log.exists() else ""
        fail_timeout(p.args, timeout, tail(text))
        raise  # unreachable: pytest.fail raises


def descendants(pid: int) -> list[int]:
    """The pids of every process below `pid` (from /proc), deepest last."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                kids = [int(c) for c in (t / "children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                kids = []
            out += kids
            todo += kids
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants: for children that a library started in the
    test's own process group (submitit's local executor)."""
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


@contextlib.contextmanager
def tree_killed_on_failure(pid: int) -> Iterator[None]:
    """Kill `pid`'s process tree when the block is left by an exception."""
    try:
        yield
    except BaseException:
        kill_tree(pid)
        raise
