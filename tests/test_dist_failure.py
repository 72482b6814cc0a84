"""A rank dying mid-run ends the whole job with a non-zero status in bounded time: under
torchrun (its agent tears the group down) and with hand-started processes (no agent: the
survivor's collective fails on the closed connection or times out after
train.dist_timeout_s)."""

import contextlib
import subprocess
import sys
import time

import pytest

from tests import procs
from tests.dist_util import ROOT, WORKER, env, torchrun

pytestmark = pytest.mark.dist
ARGS = ["train.batch=2", "train.threads=1", "--max-steps", "200", "train.ckpt_every_kimg=100",
        "train.dist_timeout_s=20", "--fail-at", "3", "--fail-rank", "1"]


def test_torchrun_job_fails_fast_when_a_rank_dies(tmp_path):
    t0 = time.monotonic()
    p = torchrun(tmp_path, 2, *ARGS, timeout=120)
    elapsed = time.monotonic() - t0
    assert p.returncode != 0
    assert "injected failure at step 3" in p.stdout
    assert elapsed < 90
    assert not (tmp_path / "rank0.json").exists()  # rank 0 did not finish the 200 steps


@pytest.mark.slow
def test_hand_started_ranks_fail_within_the_collective_timeout(tmp_path):
    port = procs.free_port()
    ranks = []
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:  # each rank in its own group, killed on failure
        for r in range(2):
            e = {**env(), "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
            log = stack.enter_context(open(tmp_path / f"log-rank{r}.txt", "w"))
            ranks.append(stack.enter_context(procs.started(
                [sys.executable, WORKER, str(tmp_path), *ARGS], cwd=ROOT, env=e,
                stdout=log, stderr=subprocess.STDOUT)))
        try:
            codes = [procs.wait(p, timeout=120, log=tmp_path / f"log-rank{i}.txt")
                     for i, p in enumerate(ranks)]
        finally:
            for p in ranks:
                if p.poll() is not None:
                    continue
                procs.kill_group(p)
    elapsed = time.monotonic() - t0
    assert codes[1] == 3  # the injected crash
    assert codes[0] != 0  # the survivor did not hang, and did not pretend success
    assert elapsed < 20 + 60  # the collective timeout plus start-up
