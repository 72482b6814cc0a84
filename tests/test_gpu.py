"""The GPU path, on a CUDA device (marked `gpu`; skipped without one): one process under
torchrun runs DDP over NCCL (the multi-GPU code path) in bf16 and in fp16 with the loss
scaler, resumes from its checkpoint to the very state of an uninterrupted run, and a step
that does not log makes no host synchronisation (torch.cuda.set_sync_debug_mode("error")).

Runs from the repository with the machine's own torch (`PYTHONPATH=.`) and the embedded
synthetic data: no webdataset, submitit, deepspeed or ffcv needed."""

from __future__ import annotations

import json

import pytest
import torch

from tests.dist_util import check, load, torchrun
from tests.resume_utils import final_state

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
COMMON = ["train.device=cuda", "train.batch=8", "train.log_every_kimg=0.008", "train.threads=1"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_one_gpu_torchrun_nccl_resumes_to_the_same_state(tmp_path, precision):
    args = [*COMMON, f"train.precision={precision}", "train.ckpt_every_kimg=0.08"]  # step 10
    check(torchrun(tmp_path / "straight", 1, *args, "train.kimg=0.16", timeout=600))
    first = torchrun(tmp_path / "resumed", 1, *args, "train.kimg=0.08", timeout=600)
    check(first)
    second = torchrun(tmp_path / "resumed", 1, *args, "train.kimg=0.16", timeout=600)
    check(second)
    assert "resumed from" in second.stdout
    rec, _ = load(tmp_path / "straight", 0)
    assert (rec["engine"], rec["world"]) == ("ddp", 1)  # a process group and DDP at world 1
    a, b = final_state(tmp_path / "straight" / "run"), final_state(tmp_path / "resumed" / "run")
    assert a["controller"] == b["controller"]  # k, e_{t-1}, e_{t-2} identical
    assert a["progress"]["step"] == b["progress"]["step"] == 20
    for name in a["models"]:
        for key, t in a["models"][name].items():
            assert torch.equal(t, b["models"][name][key]), (name, key)
    if precision == "fp16":
        assert a["scaler"]["scale"] == b["scaler"]["scale"]


def test_a_step_that_does_not_log_never_synchronises(tmp_path):
    from vaegan_dist.config import build_config
    from vaegan_dist.train import Trainer

    cfg = build_config("tiny", [*COMMON, "train.precision=bf16", "train.kimg=0.096",
                                "train.log_every_kimg=0.048", "train.ckpt_every_kimg=0",
                                "train.image_every_kimg=0", f"run_dir={tmp_path}"])
    trainer = Trainer(cfg)
    step_fn = trainer.step_fn
    torch.cuda.synchronize()

    def strict(batches, step):
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
        try:
            return step_fn(batches, step)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    trainer.step_fn = strict
    trainer.fit()
    recs = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [6, 12] and not any(r["skipped"] for r in recs)
