"""Checkpoint folder rules: keep-k pruning, incomplete folders skipped, rank != 0 writes no
shared file, mismatched configs refused in one line, unwrapped names, weights-only loads."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vaegan_dist import checkpoint as ckpt
from vaegan_dist.cli.train import main as cli_main

from .resume_utils import cli_args


def _save(run_dir: Path, step: int, keep: int = 2) -> Path:
    state = {"step": step, "models": {"m": {"w": torch.full((3,), float(step))}}}
    return ckpt.save(run_dir, step, state, {"m.w": torch.zeros(3)}, {"step": str(step)}, keep)


def test_keep_k_pruning_and_stale_tmp_removed(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step-000000099"
    stale.mkdir(parents=True)
    (stale / "state.pt").write_bytes(b"half")
    for s in (1, 2, 3, 4, 5):
        _save(tmp_path, s, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000000004", "step-000000005"]
    state, rng = ckpt.load(ckpt.latest(tmp_path))
    assert state["step"] == 5 and torch.equal(state["models"]["m"]["w"], torch.full((3,), 5.0))
    assert rng is not None and "torch" in rng


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_kill_during_pruning_leaves_no_incomplete_folder_under_a_final_name(tmp_path,
                                                                          monkeypatch):
    # rmtree deletes files in directory order; the worst order removes the marker first.
    # A kill right after that must not leave an unmarked folder under a step-* name.
    for s in (1, 2):
        _save(tmp_path, s, keep=5)
    real_rmtree = shutil.rmtree

    def rmtree_killed_after_the_marker(path, *a, **k):
        if not Path(path).exists():
            return  # nothing to delete: rmtree(ignore_errors=True) returns too
        (Path(path) / ckpt.MARKER).unlink(missing_ok=True)
        raise _Killed

    monkeypatch.setattr(shutil, "rmtree", rmtree_killed_after_the_marker)
    with pytest.raises(_Killed):
        _save(tmp_path, 3, keep=1)
    root = tmp_path / "checkpoints"
    finals = [p for p in root.iterdir() if ckpt.STEP_NAME.fullmatch(p.name)]
    assert finals and all((p / ckpt.MARKER).exists() for p in finals), finals
    assert ckpt.latest(tmp_path) == ckpt.step_dir(tmp_path, 3)
    assert ckpt.incomplete_checkpoints(tmp_path) == []
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    _save(tmp_path, 4, keep=1)  # the next save clears what the killed prune left
    assert sorted(p.name for p in root.iterdir()) == ["step-000000004"]


def test_save_replaces_an_incomplete_folder_of_the_same_step(tmp_path):
    # an unmarked step-* folder (an older prune's leftover) is not "saved already"
    half = ckpt.step_dir(tmp_path, 5)
    half.mkdir(parents=True)
    (half / "state.pt").write_bytes(b"half")
    assert _save(tmp_path, 5) == half
    state, _ = ckpt.load(half)
    assert state["step"] == 5 and ckpt.latest(tmp_path) == half
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000000005"]


def test_incomplete_checkpoint_skipped_and_reported(tmp_path, capsys):
    _save(tmp_path, 3)
    half = tmp_path / "checkpoints" / "step-000000007"  # no COMPLETE marker
    half.mkdir()
    (half / "state.pt").write_bytes(b"truncated")
    (tmp_path / "checkpoints" / ".tmp-step-000000008").mkdir()
    assert ckpt.latest(tmp_path) == ckpt.step_dir(tmp_path, 3)
    skipped = ckpt.incomplete_checkpoints(tmp_path)
    assert {p.name for p in skipped} == {"step-000000007", ".tmp-step-000000008"}
    with pytest.raises(ckpt.CheckpointError, match="not a complete checkpoint"):
        ckpt.load(half)


def test_trainer_resume_reports_incomplete_and_refuses_mismatch(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli_main(cli_args(run_dir, 2)) == 0
    half = run_dir / "checkpoints" / "step-000000005"
    half.mkdir()
    capsys.readouterr()
    assert cli_main(cli_args(run_dir, 3)) == 0
    out = capsys.readouterr().out
    assert f"ignoring incomplete checkpoint {half}" in out
    assert "resumed from" in out and "step-000000002" in out
    # another model size: refused with one line naming the mismatch, exit code 2
    assert cli_main(cli_args(run_dir, 4, overrides=("model.n=16",))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "is from another config: model.n: checkpoint 8 vs config 16" in err
    assert cli_main(cli_args(run_dir, 4, "--resume", str(tmp_path / "nope"))) == 2
    assert "does not exist" in capsys.readouterr().err


def test_state_loads_weights_only_and_names_are_unwrapped(tmp_path):
    class Wrapper(nn.Module):  # stands in for DDP's `.module`
        def __init__(self, m):
            super().__init__()
            self.module = m

    lin = nn.Linear(2, 2)
    assert ckpt.unwrap(Wrapper(Wrapper(lin))) is lin
    from vaegan_dist.train import weights_of

    w = weights_of({"disc": Wrapper(lin)})
    assert set(w) == {"disc.weight", "disc.bias"}
    # a pickled arbitrary object inside state.pt: the checksum catches the changed file, and
    # without checksums weights_only loading refuses it
    _save(tmp_path, 1)
    torch.save({"evil": os.system}, ckpt.step_dir(tmp_path, 1) / "state.pt")
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch in state.pt"):
        ckpt.load(ckpt.step_dir(tmp_path, 1))
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load(ckpt.step_dir(tmp_path, 1), verify=False)


def _rank_worker(rank: int, world: int, init_file: str, run_dir: str, log: str) -> None:
    import torch.distributed as td

    writes: list[str] = []
    if rank != 0:
        def hook(event, args):
            if event == "open" and args[1] is not None and any(c in str(args[1]) for c in "wax+"):
                writes.append(f"open {args[0]}")
            elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree",
                           "os.replace", "os.unlink"):
                writes.append(f"{event} {args[0]}")
        sys.addaudithook(hook)
    td.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for s in (1, 2, 3):
            _save(Path(run_dir), s, keep=2)
    finally:
        td.destroy_process_group()
    if rank != 0:
        Path(log).write_text("\n".join(w for w in writes if run_dir in w))


@pytest.mark.dist
def test_rank_other_than_zero_writes_no_shared_file(tmp_path):
    import torch.multiprocessing as mp

    run_dir, log = tmp_path / "run", tmp_path / "rank1-writes.txt"
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(run_dir), str(log)), nprocs=2)
    writes = log.read_text().splitlines()
    # rank 1 wrote exactly its own RNG file into each temporary folder, nothing else
    assert writes == [f"open {run_dir}/checkpoints/.tmp-step-{s:09d}/rng-rank1.pt"
                      for s in (1, 2, 3)], writes
    final = run_dir / "checkpoints" / "step-000000003"
    assert sorted(p.name for p in final.iterdir()) == [
        "COMPLETE", "checksums.json", "rng-rank0.pt", "rng-rank1.pt", "state.pt",
        "weights.safetensors"]
