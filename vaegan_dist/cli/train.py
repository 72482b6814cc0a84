"""vaegan-train --config NAME|PATH [--run-dir DIR] [--kimg K | --max-steps N] [--batch B]
[--seed S] [--log-every N] [--ckpt-every N] [--resume PATH] [--dry-run] [key=value ...]"""

from __future__ import annotations

import argparse
import os
import sys

from .. import dist
from ..checkpoint import SAVE_FAILED_EXIT_CODE, CheckpointError, CheckpointWriteError
from ..config import Config, ConfigError, build_config, config_dir, dump_yaml
from ..extras import MissingExtra, require
from ..guard import DIVERGED_EXIT_CODE, Diverged
from ..preempt import REQUEUE_EXIT_CODE, Preempted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="vaegan-train",
        description="Train VAE + BEGAN* + LSM. Running the same command again resumes from the "
                    "newest complete checkpoint in the run folder. Exit status: 0 done, 2 bad "
                    "input, 65 diverged (the guard gave up), 74 a checkpoint could not be "
                    "written, 75 stopped with a checkpoint (requeue me).",
        epilog="Overrides: any config key as key=value, e.g. loss.alpha=0.3 "
               "train.precision=bf16 loss.variant=began. --list-presets shows the presets.")
    p.add_argument("--config", help="preset name (see --list-presets) or YAML path")
    p.add_argument("--list-presets", action="store_true",
                   help="print the presets folder and the files in it (presets, DeepSpeed, "
                        "accelerate and sbatch templates), then exit")
    p.add_argument("--run-dir", help="run folder (config run_dir)")
    p.add_argument("--kimg", type=float, help="the run's length in thousands of images "
                   "(train.kimg)")
    p.add_argument("--max-steps", type=int, help="the run's length in optimiser steps of this "
                   "launch's global batch (stored as train.kimg)")
    p.add_argument("--batch", type=int, help="per-device batch (train.batch)")
    p.add_argument("--seed", type=int, help="seed (train.seed)")
    p.add_argument("--log-every", type=int,
                   help="steps between stats lines (stored as train.log_every_kimg)")
    p.add_argument("--ckpt-every", type=int,
                   help="steps between checkpoints (stored as train.ckpt_every_kimg)")
    p.add_argument("--resume", help="resume from this checkpoint folder instead of the newest")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    # intermixed: overrides may come before and after the options (scripts append both)
    args = p.parse_intermixed_args(argv)
    if not args.config and not args.list_presets:
        p.error("the following arguments are required: --config")
    return args


def list_presets() -> None:
    """The packaged presets folder and its files, one per line."""
    root = config_dir()
    lines = [f"presets folder: {root}"] + [
        f"  {f.relative_to(root)}" for f in sorted(root.rglob("*"))
        if f.is_file() and f.suffix in (".yaml", ".json", ".sbatch")]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:  # `| head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


STEP_FLAGS = (("max_steps", "train.kimg"), ("log_every", "train.log_every_kimg"),
              ("ckpt_every", "train.ckpt_every_kimg"))


def resolve(args: argparse.Namespace) -> Config:
    """The config: preset, then the options and key=value overrides, validated once. The
    step flags are written as the kimg keys they stand for (N steps of this launch's
    global batch: per-device batch x accum x the launcher's world size), before validation,
    so the resolved config (config.yaml) is what runs."""
    ov = list(args.overrides)
    for flag, key in (("run_dir", "run_dir"), ("batch", "train.batch"), ("seed", "train.seed"),
                      ("kimg", "train.kimg")):
        v = getattr(args, flag)
        if v is not None:
            ov.append(f"{key}={v}")
    steps = [(flag, key, getattr(args, flag)) for flag, key in STEP_FLAGS
             if getattr(args, flag) is not None]
    for flag, key, _ in steps:
        if any(o.split("=", 1)[0].strip() == key for o in ov):
            raise ConfigError(f"--{flag.replace('_', '-')} and {key} both given: give one")
    if steps:
        base = build_config(args.config, ov).train
        global_batch = base.batch * base.accum * dist.resolve_env().world_size
        for flag, key, n in steps:
            if n < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {n}")
            ov.append(f"{key}={n * global_batch / 1000!r}")
    return build_config(args.config, ov)


def require_extras(cfg: Config) -> None:
    """The optional packages this config needs, checked before any work (MissingExtra)."""
    if cfg.train.engine == "deepspeed":
        require("deepspeed", "deepspeed", "train.engine=deepspeed")
    if cfg.data.source == "ffcv":
        require("ffcv.loader", "ffcv", "data.source=ffcv")
    if cfg.train.eval_every_kimg > 0:
        require("sklearn.datasets", "eval", "train.eval_every_kimg (the offline digits metric)")


def main(argv: list[str] | None = None) -> int:
    """Train; the exit status (see --help). In-process callers (submitit's TrainJob, tests)
    get it back; the `vaegan-train` command and `python -m` end through `run`."""
    args = parse_args(argv)
    if args.list_presets:
        list_presets()
        return 0
    try:
        cfg = resolve(args)
        if args.dry_run:
            print(dump_yaml(cfg), end="")
            return 0
        require_extras(cfg)
        from ..train import train

        train(cfg, args.resume)
    except CheckpointWriteError as e:  # full disk, I/O error: nothing complete was touched
        print(f"vaegan-train: error: {e} (exit {SAVE_FAILED_EXIT_CODE})", file=sys.stderr)
        return SAVE_FAILED_EXIT_CODE
    except Diverged as e:  # past the guard's rollbacks: a requeue would not help
        print(f"vaegan-train: error: {e} (exit {DIVERGED_EXIT_CODE})", file=sys.stderr)
        return DIVERGED_EXIT_CODE
    except (ConfigError, CheckpointError, MissingExtra, FileNotFoundError) as e:
        print(f"vaegan-train: error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"vaegan-train: {e} (exit {REQUEUE_EXIT_CODE})", file=sys.stderr)
        return REQUEUE_EXIT_CODE
    except KeyboardInterrupt:
        print("vaegan-train: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """The `vaegan-train` command: `main`, then `dist.leave`, where a rank of a multi-process
    job ends without racing gloo's threads through the interpreter's teardown."""
    sys.exit(dist.leave(main()))


if __name__ == "__main__":
    run()
