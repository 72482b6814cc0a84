"""DeepSpeed on CPU (gloo): an engine per model, built from the packaged
configs/deepspeed/*.json (by name: train.deepspeed_config=zero1; a path works too); ZeRO-0,
1 and 2 with 2 processes x batch B give the same weights and k_t as 1 plain process with
2 micro-batches of B (the same micro-batches: the full model's prior term is a statistic of
each), and both ranks agree bit for bit. Slow: the first DeepSpeed start on CPU compiles
deepspeed_shm_comm (35 s to 2 min on this machine, cached per venv), each run ~20 s."""

import pytest
import torch

from tests.dist_util import check, load, max_diff, single, torchrun

pytestmark = [pytest.mark.dist, pytest.mark.slow]
COMMON = ["--max-steps", "4", "train.threads=1", "train.ckpt_every_kimg=0.016"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds_ref")
    check(single(out, "train.batch=4", "train.accum=2", *COMMON))
    return load(out, 0)


def test_engine_construction_one_process(tmp_path):
    check(torchrun(tmp_path, 1, "train.batch=4", "train.engine=deepspeed",
                   "train.deepspeed_config=zero1", *COMMON, timeout=500))
    rec, _ = load(tmp_path, 0)
    assert rec["engine"] == "deepspeed" and len(rec["records"]) == 4


@pytest.mark.parametrize("stage", ["zero0", "zero1", "zero2"])
def test_zero_equivalence_two_processes(tmp_path, reference, stage):
    check(torchrun(tmp_path, 2, "train.batch=4", "train.engine=deepspeed",
                   f"train.deepspeed_config={stage}", *COMMON,
                   timeout=500))
    (r0, w0), (r1, w1) = load(tmp_path, 0), load(tmp_path, 1)
    ref, w_ref = reference
    assert [r["k_hex"] for r in r0["records"]] == [r["k_hex"] for r in r1["records"]]
    assert max_diff(w0, w1) == 0.0
    assert max_diff(w0, w_ref) < 2e-5
    for a, b in zip(r0["records"], ref["records"], strict=True):
        assert a["k"] == pytest.approx(b["k"], rel=1e-5)


def test_zero2_exact_resume_two_processes(tmp_path):
    """DeepSpeed's checkpoint API inside our folder scheme: 2 processes ZeRO-2, K steps, the
    same command again to 2K == 2K in one go (weights and k_t bitwise). Adam's moments live
    only in the DeepSpeed shards (state.pt holds no optimiser), so a resume that lost them
    would not match."""
    from tests.resume_utils import final_state, k_trajectory, run, train_cmd

    ds = ("train.engine=deepspeed", "train.deepspeed_config=zero2")
    k = 3
    a, b = tmp_path / "straight", tmp_path / "resumed"
    for run_dir, steps in ((a, 2 * k), (b, k), (b, 2 * k)):
        r = run(train_cmd(run_dir, steps, "--ckpt-every", str(k), nproc=2, overrides=ds),
                timeout=500)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert f"resumed from {b}/checkpoints/step-{k:09d}" in r.stdout
    folder = b / "checkpoints" / f"step-{2 * k:09d}"
    shards = sorted(p.name for p in (folder / "deepspeed" / "disc").iterdir())
    assert sum("optim_states" in n for n in shards) == 2, shards  # one ZeRO shard per rank
    sa, sb = final_state(a), final_state(b)
    assert "optimizers" not in sa and sa["progress"]["step"] == sb["progress"]["step"] == 2 * k
    for name in sa["models"]:
        for key, t in sa["models"][name].items():
            assert torch.equal(t, sb["models"][name][key]), (name, key)
    assert k_trajectory(a) == k_trajectory(b)
    assert sa["controller"] == sb["controller"]


def test_switching_engine_on_resume_is_one_clear_error(tmp_path):
    """A DeepSpeed checkpoint resumed by plain DDP (and the reverse) is refused in one line."""
    from tests.resume_utils import run, train_cmd

    ds = ("train.engine=deepspeed", "train.deepspeed_config=configs/deepspeed/zero1.json")
    a, b = tmp_path / "ds", tmp_path / "plain"
    assert run(train_cmd(a, 2, nproc=2, overrides=ds), timeout=500).returncode == 0
    r = run(train_cmd(a, 3, nproc=2))
    assert r.returncode != 0 and "resume it with train.engine=deepspeed" in r.stderr
    # one line from our CLI; torchrun prints its own ChildFailedError report after it
    assert not [ln for ln in r.stderr.splitlines() if "File" in ln and "vaegan_dist" in ln]
    assert run(train_cmd(b, 2, nproc=2)).returncode == 0
    r = run(train_cmd(b, 3, nproc=2, overrides=ds), timeout=500)
    assert r.returncode != 0 and "holds no DeepSpeed state" in r.stderr


def test_guard_rolls_back_at_once_under_deepspeed_two_processes(tmp_path):
    """The divergence guard with DeepSpeed (ZeRO-2, 2 processes): its engine step cannot be
    skipped on our flag, so a non-finite step rolls back at once (not after
    guard.rollback_after in a row), to the newest good checkpoint, through DeepSpeed's own
    checkpoint API, with the lr halved; the run then finishes and every checkpoint on disk
    is finite and verified."""
    import json
    import os
    import subprocess
    import sys

    from tests.test_guard import SMALL, assert_every_checkpoint_good, strict_records
    from vaegan_dist import checkpoint as ckpt
    from vaegan_dist.guard import FAULT_ENV

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vaegan_dist.cli.train", "--config", "tiny", "--run-dir", str(tmp_path),
           "--max-steps", "16", *SMALL, "train.ckpt_every_kimg=0.032",  # every 4 steps
           "guard.rollback_after=3", "train.stop_check_every=1",
           "train.engine=deepspeed", "train.deepspeed_config=zero2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", FAULT_ENV: json.dumps({"from": 9, "to": 11})}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 non-finite steps in a row at step 10: rolled back to step-000000008 (step 8), " \
           "lr 0.0005 -> 0.00025 (rollback 1 of at most 3)" in r.stdout
    assert "rolled back to step-000000008 (step 8), lr 0.00025 -> 0.000125 (rollback 2" \
        in r.stdout
    recs = strict_records(tmp_path)
    assert [x["rollback"] for x in recs if "rollback" in x] == [1, 2]
    assert recs[-1]["step"] == 16 and recs[-1]["lr"] == 0.000125 and not recs[-1]["skipped"]
    assert_every_checkpoint_good(tmp_path)
    state, _ = ckpt.load(ckpt.latest(tmp_path))
    assert state["guard"] == {"skipped": 2, "rollbacks": 2}
