"""`accelerate launch --num_processes 2` on CPU runs 20 steps of `tiny` through the same
trainer (train.engine=accelerate), and both ranks agree bit for bit."""

import sys
from pathlib import Path

import pytest

from tests.dist_util import WORKER, check, load, max_diff, run
from tests.procs import free_port
from vaegan_dist.config import config_dir

pytestmark = pytest.mark.dist
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
CPU_CONFIG = str(config_dir() / "accelerate" / "cpu_multi_process.yaml")  # packaged
PORT = ("--main_process_port", str(free_port()))  # not 29500: other tests run in parallel


def test_accelerate_launch_two_cpu_processes(tmp_path):
    p = run([ACCELERATE, "launch", "--config_file", CPU_CONFIG, *PORT,
             "--num_processes", "2", WORKER, str(tmp_path), "train.engine=accelerate",
             "--max-steps", "20", "train.batch=4", "train.threads=1",
             "train.ckpt_every_kimg=0.08"])
    check(p)
    r0, w0 = load(tmp_path, 0)
    r1, w1 = load(tmp_path, 1)
    assert r0["engine"] == r1["engine"] == "accelerate"
    assert r0["world"] == 2 and len(r0["records"]) == 20
    assert [r["k_hex"] for r in r0["records"]] == [r["k_hex"] for r in r1["records"]]
    assert max_diff(w0, w1) == 0.0
    assert len(list((tmp_path / "run" / "checkpoints").glob("step-*"))) >= 1


@pytest.mark.slow
def test_precision_conflict_with_the_launcher_is_an_error(tmp_path):
    p = run([ACCELERATE, "launch", "--config_file", CPU_CONFIG, *PORT,
             "--num_processes", "2", "--mixed_precision", "bf16", WORKER, str(tmp_path),
             "train.engine=accelerate", "--max-steps", "1", "train.batch=2"])
    assert p.returncode != 0
    assert "set it in one place only" in p.stdout + p.stderr
