"""The GPU path's invariants, checked on the CPU: every collective receives tensors on the
training device (NCCL serves CUDA tensors only; a CPU tensor there failed at step 1), a
step that does not log never waits for the device, torch.distributed is used in dist.py
only, and one process under a launcher runs the multi-process code path.

The meta device stands in for CUDA: its tensors have no data, so any host read in a step
(.item(), .tolist(), bool()) fails on it, and any tensor the step makes on the host shows
up as a CPU tensor beside the meta training tensors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tests.dist_util import check, load, single, torchrun
from vaegan_dist import dist
from vaegan_dist.config import build_config
from vaegan_dist.train import Trainer, build_step

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.n=4", "model.latent=3", "model.d_latent=5", "train.batch=4", "train.threads=1",
         "train.image_every_kimg=0", "train.grid=2", "data.num_images=32"]


@pytest.fixture
def meta_device(monkeypatch):
    monkeypatch.setenv(dist.STRICT_ENV, "1")
    monkeypatch.setattr(dist, "_DEVICE", torch.device("meta"))


def test_strict_mode_rejects_a_collective_off_the_training_device(meta_device):
    with pytest.raises(dist.CollectiveDeviceError, match="tensor on cpu, training device meta"):
        dist.all_reduce_mean(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(dist.CollectiveDeviceError, match="all_reduce_max"):
        dist.all_reduce_max(torch.zeros(1))
    dist.all_reduce_mean(torch.zeros(3, device="meta"))  # on the device: accepted


@pytest.mark.parametrize("variant", ["vae_began_star_lsm", "began"])
@pytest.mark.parametrize("accum", [1, 2])
def test_whole_step_runs_on_the_device_without_host_reads(meta_device, monkeypatch, variant,
                                                          accum):
    """The step (forward, three phases, optimisers, the statistics' all-reduce and the
    controller) on the meta device: no host read, every collective given device tensors.
    Fused Adam refuses meta tensors, and without it the guard decides a skip on the host,
    so this runs foreach Adam without the guard; the next test counts host reads of the
    default step (fused Adam, guard on) on the CPU."""
    seen = []
    real = dist.all_reduce_mean
    monkeypatch.setattr(dist, "all_reduce_mean", lambda t: seen.append(t.device) or real(t))
    cfg = build_config("tiny", [*SMALL, f"loss.variant={variant}", f"train.accum={accum}",
                                "optim.fused=false", "guard.enabled=false"])
    step = build_step(cfg, torch.device("meta"))
    x = [torch.empty(4, 3, 32, 32, device="meta") for _ in range(accum)]
    stats = step(x, 0)
    assert seen == [torch.device("meta")]  # one fused all-reduce of every statistic
    assert stats.values.device.type == stats.k.device.type == "meta"
    assert step.controller.k.device.type == "meta"


SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
         torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.nonzero,
         torch.Tensor.cpu, torch.nonzero, torch.equal}  # .all()/.any() only sync via bool()


class CountHostReads(TorchFunctionMode):
    """Counts the calls that read a tensor on the host (a sync when it lives on a GPU) made
    directly by project code (vaegan_dist), inside the train step or outside it."""

    def __init__(self):
        super().__init__()
        self.in_step: list[str] = []
        self.outside: list[str] = []
        self.stepping = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            caller = sys._getframe(1)  # not inspect.stack(): it reads every frame's source
            name = caller.f_code.co_filename
            if "/vaegan_dist/" in name:
                where = self.in_step if self.stepping else self.outside
                where.append(f"{func.__name__} {Path(name).name}:{caller.f_lineno}")
        return func(*args, **(kwargs or {}))


def test_only_logging_and_stop_check_steps_read_the_device(tmp_path):
    """Through the real trainer loop on CPU: host reads by project code. The step itself
    has none; between steps, a logging step has one (the statistics, one copy) and a
    stop-check step one (the agreed flag); any other step none."""
    cfg = build_config("tiny", [*SMALL, "train.kimg=0.048", "train.log_every_kimg=0.016",
                                "train.stop_check_every=6", "train.ckpt_every_kimg=0",
                                f"run_dir={tmp_path}"])
    trainer = Trainer(cfg)
    counter = CountHostReads()
    step_fn = trainer.step_fn
    after: list[list[str]] = []  # host reads between the end of step i and step i + 1

    def counted(batches, step):
        if step > 0:
            after.append(counter.outside[:])
        counter.outside.clear()
        counter.stepping = True
        try:
            return step_fn(batches, step)
        finally:
            counter.stepping = False

    trainer.step_fn = counted
    with counter:
        trainer.fit()
    assert counter.in_step == []
    assert len(after) == 11
    for step, calls in enumerate(after, start=1):  # after optimiser step `step` (1-based)
        want = (step % 4 == 0) + (step % 6 == 0)
        assert len(calls) == want, (step, calls)


def test_torch_distributed_is_used_in_dist_py_only():
    pat = re.compile(r"torch\.distributed|torch_dist\b|import torch_dist|from torch import "
                     r"distributed")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "vaegan_dist").rglob("*.py")
                 if p.name != "dist.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if pat.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []


@pytest.mark.dist
def test_one_process_under_a_launcher_runs_the_multi_process_path(tmp_path):
    """torchrun --nproc_per_node 1: a process group and DDP-wrapped models (the path every
    multi-GPU run takes, NCCL collectives and DDP hooks on a GPU), with results bit-identical
    to a plain process (DDP over one rank averages over one)."""
    args = ["train.batch=4", "--max-steps", "4", "train.threads=1", "--log-every", "1"]
    check(torchrun(tmp_path / "launched", 1, *args))
    check(single(tmp_path / "plain", *args))
    launched, w_launched = load(tmp_path / "launched", 0)
    plain, w_plain = load(tmp_path / "plain", 0)
    assert (launched["engine"], launched["world"]) == ("ddp", 1)
    assert plain["engine"] == "single"
    assert [r["k_hex"] for r in launched["records"]] == [r["k_hex"] for r in plain["records"]]
    assert all(torch.equal(w_launched[k], w_plain[k]) for k in w_plain)
