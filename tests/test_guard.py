"""Never lose a good run: each fault injected for real. A non-finite step (the documented
test-only injection of guard.FAULT_ENV, or a learning rate that diverges) is skipped,
counted, rolled back or ends the run with its exit code; no non-finite checkpoint is ever
on disk and every stats.jsonl line is strict JSON; an unreadable or corrupted checkpoint is
skipped on resume; a full disk gives one line, exit 74 and no partial folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import procs
from tests.dist_util import check, load, torchrun
from vaegan_dist import checkpoint as ckpt
from vaegan_dist.config import build_config
from vaegan_dist.guard import DIVERGED_EXIT_CODE, FAULT_ENV
from vaegan_dist.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# 4 images a step: a checkpoint every 4 steps is 0.016 kimg
SMALL = ["model.n=8", "model.latent=8", "model.d_latent=8", "train.batch=4", "train.threads=1",
         "train.image_every_kimg=0", "train.grid=2", "data.num_images=64",
         "train.log_every_kimg=0.004"]
EVERY_4 = "train.ckpt_every_kimg=0.016"


def fault(monkeypatch, start: int, stop: int, rank: int | None = None, replay=False):
    monkeypatch.setenv(FAULT_ENV, json.dumps({"from": start, "to": stop, "rank": rank,
                                              "replay": replay}))


def strict_records(run_dir: Path) -> list[dict]:
    """stats.jsonl, parsed as strict JSON: a bare NaN/Infinity token is an error."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return [json.loads(line, parse_constant=refuse)
            for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def assert_every_checkpoint_good(run_dir: Path) -> None:
    reports = ckpt.verify_all(run_dir)
    assert reports and all(r.ok for r in reports), [(r.path.name, r.detail) for r in reports]


def cli(run_dir: Path, steps: int, *overrides: str, env: dict | None = None):
    cmd = [str(BIN / "vaegan-train"), "--config", "tiny", "--run-dir", str(run_dir),
           "--max-steps", str(steps), *SMALL, *overrides]
    return procs.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                     timeout=300)


def snapshot(trainer: Trainer) -> dict:
    return {"models": {n: [p.detach().clone() for p in m.parameters()]
                       for n, m in trainer.models.items()},
            "controller": trainer.controller.state_dict()}


def test_a_nonfinite_step_updates_nothing_and_is_counted(tmp_path, monkeypatch):
    fault(monkeypatch, 5, 6)
    trainer = Trainer(build_config("tiny", [*SMALL, "train.kimg=0.032", f"run_dir={tmp_path}"]))
    after = {}
    trainer.on_step = lambda step, _s: after.__setitem__(step, snapshot(trainer))
    trainer.fit()
    for name in after[4]["models"]:  # step 5 (0-based) moved nothing, the next steps did
        assert all(torch.equal(a, b) for a, b in zip(after[4]["models"][name],
                                                     after[5]["models"][name]))
        assert not all(torch.equal(a, b) for a, b in zip(after[5]["models"][name],
                                                         after[6]["models"][name]))
    assert after[5]["controller"] == after[4]["controller"]
    assert after[6]["controller"] != after[5]["controller"]
    recs = strict_records(tmp_path)
    assert [r["skipped"] for r in recs] == [False] * 5 + [True] + [False] * 2
    assert [r["skipped_steps"] for r in recs] == [0] * 5 + [1] * 3
    assert recs[5]["L_d"] == "NaN" and float(recs[5]["L_d"]) != float(recs[5]["L_d"])
    assert_every_checkpoint_good(tmp_path)


def test_guard_on_and_off_are_bit_identical_when_nothing_goes_wrong(tmp_path):
    runs = {}
    for on in (True, False):
        t = Trainer(build_config("tiny", [*SMALL, "train.kimg=0.024", f"guard.enabled={on}",
                                          f"run_dir={tmp_path / str(on)}"]))
        ks = []
        t.on_step = lambda _step, s, ks=ks: ks.append(float(s.k).hex())
        t.fit()
        runs[on] = (ks, {k: v.clone() for k, v in t.models["disc"].state_dict().items()},
                    snapshot(t))
    (k_on, d_on, s_on), (k_off, d_off, s_off) = runs[True], runs[False]
    assert k_on == k_off and len(set(k_on)) > 1
    assert all(torch.equal(d_on[k], d_off[k]) for k in d_on)
    assert all(torch.equal(a, b) for n in s_on["models"]
               for a, b in zip(s_on["models"][n], s_off["models"][n]))


def test_a_streak_rolls_back_with_a_lower_lr_and_the_run_goes_on(tmp_path):
    env = {FAULT_ENV: json.dumps({"from": 9, "to": 13})}
    r = cli(tmp_path, 20, EVERY_4, "guard.rollback_after=3", "train.stop_check_every=1",
            env=env)
    assert r.returncode == 0, procs.tail(r.stdout + r.stderr)
    assert "3 non-finite steps in a row at step 12: rolled back to step-000000008 (step 8), " \
           "lr 0.0005 -> 0.00025 (rollback 1 of at most 3)" in r.stdout
    recs = strict_records(tmp_path)
    assert [x["rollback"] for x in recs if "rollback" in x] == [1]
    assert recs[-1]["step"] == 20 and recs[-1]["lr"] == 0.00025 and not recs[-1]["skipped"]
    assert_every_checkpoint_good(tmp_path)
    state, _ = ckpt.load(ckpt.latest(tmp_path))
    # steps 9-11 skipped, then step 12 (first reached after the rollback)
    assert state["lr"]["lr"] == 0.00025 and state["guard"] == {"skipped": 4, "rollbacks": 1}


def test_a_run_that_keeps_diverging_stops_with_its_exit_code(tmp_path):
    env = {FAULT_ENV: json.dumps({"from": 6, "to": 10**6, "replay": True})}
    r = cli(tmp_path, 40, EVERY_4, "guard.rollback_after=2", "guard.max_rollbacks=2",
            "train.stop_check_every=1", env=env)
    assert r.returncode == DIVERGED_EXIT_CODE, procs.tail(r.stdout + r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "training diverged" in err[0] and "after 2 rollback(s)" in err[0]
    assert "Traceback" not in r.stderr
    assert r.stdout.count("rolled back to step-000000004") == 2
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-000000004"]
    assert_every_checkpoint_good(tmp_path)
    strict_records(tmp_path)


def test_a_learning_rate_that_diverges_stops_cleanly(tmp_path):
    """The issue's case, optim.lr=5: the first update already ruins the weights (finite
    but huge), every later step is non-finite; nothing is saved; exit 65."""
    r = cli(tmp_path, 40, "optim.lr=5", "train.ckpt_every_kimg=0.04")
    assert r.returncode == DIVERGED_EXIT_CODE, procs.tail(r.stdout + r.stderr)
    assert "before any checkpoint was written" in r.stderr
    assert ckpt.complete_checkpoints(tmp_path) == []
    assert any(x["skipped"] for x in strict_records(tmp_path))


def test_without_the_guard_no_nonfinite_checkpoint_is_written(tmp_path, monkeypatch):
    """Guard off, weights turn NaN at step 6: the checkpoints of steps 8 and 12 are refused,
    so keep-k rotation (keep=1) never removes the last finite one, step 4."""
    fault(monkeypatch, 6, 10**6, replay=True)
    cfg = build_config("tiny", [*SMALL, "train.kimg=0.048", "guard.enabled=false",
                                "train.keep=1", EVERY_4, f"run_dir={tmp_path}"])
    Trainer(cfg).fit()
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step-000000004"]
    assert_every_checkpoint_good(tmp_path)
    recs = strict_records(tmp_path)
    assert recs[-1]["L_d"] == "NaN" and "skipped" not in recs[-1]


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory) -> Path:
    """One 8-step run (checkpoints at 4 and 8), copied by each test that damages it."""
    run_dir = tmp_path_factory.mktemp("eight") / "run"
    assert cli(run_dir, 8, EVERY_4).returncode == 0
    return run_dir


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_an_unreadable_newest_checkpoint_is_skipped_on_resume(tmp_path, damage, eight_steps):
    tmp_path = tmp_path / "run"
    shutil.copytree(eight_steps, tmp_path)
    state = ckpt.step_dir(tmp_path, 8) / "state.pt"
    data = bytearray(state.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one bit in the middle of the tensor data: torch.load alone may not notice
        data[len(data) // 2] ^= 0x10
    state.write_bytes(bytes(data))
    v = procs.run([sys.executable, "-m", "vaegan_dist.cli.ckpt", "verify", str(tmp_path)],
                  timeout=120)
    assert v.returncode == 1 and "step-000000008  BAD" in v.stdout
    assert "falls back to step-000000004" in v.stdout
    r = cli(tmp_path, 10, EVERY_4)
    assert r.returncode == 0, procs.tail(r.stdout + r.stderr)
    assert f"warning: skipping unreadable checkpoint {ckpt.step_dir(tmp_path, 8)}" in r.stdout
    assert f"resumed from {ckpt.step_dir(tmp_path, 4)} (step 4" in r.stdout
    assert (tmp_path / "checkpoints" / "step-000000008.unreadable").is_dir()
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == [
        "step-000000004", "step-000000008", "step-000000010"]  # step 8 written anew
    assert ckpt.verify(ckpt.step_dir(tmp_path, 8)).ok


def test_a_failed_save_removes_its_folder_and_leaves_the_previous_one(tmp_path, monkeypatch):
    """Any error while saving (here torch.save failing on state.pt) behaves like a full
    disk: one error, no partial folder, the complete checkpoint before it untouched."""
    ckpt.save(tmp_path, 1, {"x": torch.ones(2)}, {"m.w": torch.ones(2)}, {}, keep=3)
    real = ckpt._save

    def failing(obj, path):
        if path.name == "state.pt":
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos 64")
        real(obj, path)

    monkeypatch.setattr(ckpt, "_save", failing)
    with pytest.raises(ckpt.CheckpointWriteError) as e:
        ckpt.save(tmp_path, 2, {"x": torch.ones(2)}, {"m.w": torch.ones(2)}, {}, keep=3)
    msg = str(e.value)
    assert "could not write checkpoint" in msg and "step-000000002" in msg
    assert f"the previous checkpoint {ckpt.step_dir(tmp_path, 1)} is intact" in msg
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000000001"]
    assert ckpt.verify(ckpt.step_dir(tmp_path, 1)).ok


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)


def _can_mount() -> str:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return ""


@pytest.mark.skipif(bool(_can_mount()), reason=_can_mount() or "can mount")
def test_a_full_disk_is_one_line_exit_74_and_nothing_partial(tmp_path):
    probe = tmp_path / "probe"
    assert cli(probe, 4, EVERY_4).returncode == 0
    one = sum(p.stat().st_size for p in ckpt.step_dir(probe, 4).rglob("*") if p.is_file())
    rest = sum(p.stat().st_size for p in probe.rglob("*") if p.is_file()) - one
    run = tmp_path / "small"  # room for the logs and two checkpoints, not three
    _mount_tmpfs(run, rest + int(2.5 * one) + (1 << 16))
    try:
        r = cli(run, 12, EVERY_4)
        assert r.returncode == ckpt.SAVE_FAILED_EXIT_CODE, procs.tail(r.stdout + r.stderr)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"could not write checkpoint {ckpt.step_dir(run, 12)}" in err[0]
        assert f"the previous checkpoint {ckpt.step_dir(run, 8)} is intact" in err[0]
        assert "MiB free" in err[0] and "(exit 74)" in err[0]
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
            "step-000000004", "step-000000008"]
        assert_every_checkpoint_good(run)
    finally:
        subprocess.run(["umount", str(run)], check=False, capture_output=True)


@pytest.mark.dist
def test_two_ranks_skip_and_roll_back_together_when_one_sees_nan(tmp_path, monkeypatch):
    """Only rank 1's images turn NaN (steps 5 and 6): both ranks skip the same steps, roll
    back together to the same checkpoint and end with identical weights and k."""
    fault(monkeypatch, 5, 7, rank=1)
    check(torchrun(tmp_path, 2, "train.batch=2", "--max-steps", "12", "train.threads=1",
                   "--log-every", "1", "train.ckpt_every_kimg=0.016", "guard.rollback_after=2",
                   "train.stop_check_every=1"))
    (r0, w0), (r1, w1) = load(tmp_path, 0), load(tmp_path, 1)
    for rec in (r0, r1):
        steps = [x["step"] for x in rec["records"]]
        assert steps == list(range(7)) + list(range(4, 12)), steps
        assert [x["skipped"] for x in rec["records"]] == [False] * 5 + [True] * 2 + [False] * 8
    assert [x["k_hex"] for x in r0["records"]] == [x["k_hex"] for x in r1["records"]]
    assert r0["fingerprint"] == r1["fingerprint"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
