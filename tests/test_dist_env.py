"""Launcher environment resolution: exactly one source (torchrun/accelerate, SLURM, none),
partial sources rejected, and the engine/DeepSpeed config validation that needs no
processes."""

import json

import pytest

from vaegan_dist import dist
from vaegan_dist.config import ConfigError, build_config

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500"}
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
         "MASTER_ADDR": "node1", "MASTER_PORT": "29500", "SLURM_JOB_ID": "77"}


def test_no_launcher_is_one_local_process():
    assert dist.resolve_env({}) == dist.DistEnv(0, 1, 0, "local")
    # an allocation without task variables (salloc shell) is not a launcher
    assert dist.resolve_env({"SLURM_JOB_ID": "5", "SLURM_NTASKS": "4"}).source == "local"


def test_torchrun_source():
    assert dist.resolve_env(TORCHRUN) == dist.DistEnv(1, 2, 1, "torchrun")


def test_slurm_source():
    assert dist.resolve_env(SLURM) == dist.DistEnv(3, 4, 1, "slurm")


def test_torchrun_inside_slurm_uses_torchrun_variables():
    assert dist.resolve_env({**SLURM, **TORCHRUN}).source == "torchrun"


@pytest.mark.parametrize("drop", ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                  "MASTER_PORT"])
def test_partial_torchrun_environment_is_an_error(drop):
    env = {k: v for k, v in TORCHRUN.items() if k != drop}
    with pytest.raises(RuntimeError, match="partial torchrun environment"):
        dist.resolve_env(env)


@pytest.mark.parametrize("drop", ["SLURM_NTASKS", "SLURM_LOCALID", "MASTER_ADDR"])
def test_partial_slurm_environment_is_an_error(drop):
    env = {k: v for k, v in SLURM.items() if k != drop}
    with pytest.raises(RuntimeError, match="partial SLURM environment"):
        dist.resolve_env(env)


def test_rank_outside_world_is_an_error():
    with pytest.raises(RuntimeError, match="bad slurm environment"):
        dist.resolve_env({**SLURM, "SLURM_PROCID": "4"})


def test_engine_keys_validated():
    with pytest.raises(ConfigError, match="train.engine"):
        build_config("tiny", ["train.engine=horovod"])
    with pytest.raises(ConfigError, match="deepspeed_config"):
        build_config("tiny", ["train.engine=deepspeed"])
    with pytest.raises(ConfigError, match="dist_timeout_s"):
        build_config("tiny", ["train.dist_timeout_s=0"])


def test_deepspeed_config_files_are_valid_for_deepspeed():
    """Every shipped JSON, with our batch semantics filled in, passes DeepSpeed's own
    validation; a file contradicting our batch or precision is refused."""
    from deepspeed.runtime.config import DeepSpeedConfig

    from vaegan_dist.engine import deepspeed_config

    for name, prec, stage in (("zero0", "fp32", 0), ("zero1", "fp32", 1), ("zero2", "fp32", 2),
                              ("zero1_bf16", "bf16", 1), ("zero2_bf16", "bf16", 2),
                              ("zero2_fp16", "fp16", 2)):
        cfg = build_config("tiny", ["train.engine=deepspeed", f"train.precision={prec}",
                                    f"train.deepspeed_config={name}",  # packaged, by name
                                    "train.batch=4", "train.accum=2"])
        assert deepspeed_config(cfg, world=2)["train_batch_size"] == 16
        ds = deepspeed_config(cfg, world=1)  # DeepSpeedConfig checks against this process
        assert ds["train_batch_size"] == 8 and ds["gradient_accumulation_steps"] == 2
        parsed = DeepSpeedConfig(ds)
        assert parsed.zero_optimization_stage == stage
        assert parsed.bfloat16_config.enabled == (name.endswith("bf16"))
        assert parsed.float16_config.enabled == (prec == "fp16")
    wrong = build_config("tiny", ["train.engine=deepspeed",
                                  "train.deepspeed_config=configs/deepspeed/zero1_bf16.json"])
    with pytest.raises(ConfigError, match="train.precision=fp32"):
        deepspeed_config(wrong, world=1)


def test_deepspeed_config_contradicting_batch_is_refused(tmp_path):
    from vaegan_dist.engine import deepspeed_config

    p = tmp_path / "ds.json"
    p.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8}))
    cfg = build_config("tiny", ["train.engine=deepspeed", f"train.deepspeed_config={p}"])
    with pytest.raises(ConfigError, match="contradicts"):
        deepspeed_config(cfg, world=1)


def test_deepspeed_refuses_bf16_with_fp16():
    from deepspeed.runtime.config import DeepSpeedConfig

    with pytest.raises(Exception, match="(?i)bf16|bfloat16|fp16"):  # noqa: B017
        DeepSpeedConfig({"train_batch_size": 4, "bf16": {"enabled": True},
                         "fp16": {"enabled": True}})
