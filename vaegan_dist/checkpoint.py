"""Atomic checkpoints of the whole training state.

RUN/checkpoints/step-NNNNNNNNN/ holds `state.pt` (the trainer's registry of stateful parts,
state.py, plus the resolved config), `rng-rankR.pt` per rank,
`weights.safetensors` (inference snapshot) and `COMPLETE`, written last. Everything is
written into a temporary folder, fsynced, marked complete, then renamed: a folder under a
final name is always whole. Only rank 0 writes shared files."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import dist

MARKER = "COMPLETE"
# Fault injection for tests only: seconds to sleep in the middle of a write (after the
# state, before the marker), so a test can kill the writer while a checkpoint is half done.
DELAY_ENV = "VAEGAN_CKPT_TEST_DELAY_S"
# Config keys a checkpoint cannot be loaded under when they change (tensor shapes, models).
STRUCTURAL = (("model", ("resolution", "n", "latent", "d_latent", "channels")),
              ("loss", ("variant",)))


class CheckpointError(RuntimeError):
    """A missing, incomplete or incompatible checkpoint; printed as one line."""


def unwrap(m: nn.Module) -> nn.Module:
    """The plain module behind DDP / torch.compile wrappers (no `module.`/`_orig_mod.`)."""
    while True:
        if hasattr(m, "_orig_mod"):
            m = m._orig_mod
        elif hasattr(m, "module") and isinstance(m.module, nn.Module):
            m = m.module
        else:
            return m


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(obj, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:09d}"


def save(run_dir: Path, step: int, state: dict, weights: dict[str, torch.Tensor],
         meta: dict[str, str], keep: int,
         shards: Callable[[Path], None] | None = None) -> Path:
    """Collective: every rank calls it. `shards(folder)`, called on every rank, writes
    engine-owned files (DeepSpeed) into the temporary folder. Returns the final folder."""
    root = Path(run_dir) / "checkpoints"
    final = step_dir(run_dir, step)
    tmp = root / f".tmp-step-{step:09d}"
    if dist.is_main():
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    dist.barrier()
    if not final.exists():
        _save(rng_state(), tmp / f"rng-rank{dist.rank()}.pt")
        if shards is not None:
            shards(tmp)
    dist.barrier()
    if dist.is_main() and not final.exists():
        from safetensors.torch import save_file

        _save(state, tmp / "state.pt")
        if os.environ.get(DELAY_ENV):
            time.sleep(float(os.environ[DELAY_ENV]))
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                  str(tmp / "weights.safetensors"), metadata=meta)
        with open(tmp / MARKER, "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        tmp.rename(final)
        _fsync_dir(root)
        prune(root, keep)
    elif dist.is_main() and tmp.exists():
        shutil.rmtree(tmp)
    dist.barrier()
    return final


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop leftovers of interrupted writes.
    Oldest first, so a kill during pruning never removes the newest complete one."""
    for old in complete_checkpoints(root.parent)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).exists())


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.name.startswith(".tmp-") or not (p / MARKER).exists())


def latest(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def load(path: Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict | None]:
    """(shared state, this rank's RNG state or None) with `weights_only=True`."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise CheckpointError(f"cannot read {path / 'state.pt'}: {e}") from e
    rng_file = path / f"rng-rank{dist.rank()}.pt"
    rng = torch.load(rng_file, weights_only=True) if rng_file.exists() else None
    return state, rng


def upgrade(state: dict) -> None:
    """Checkpoints written before the state registry (step, nimg and world_size at the top,
    no data part) load as the registry expects."""
    if "progress" not in state:
        state["progress"] = {"step": state.pop("step"), "nimg": state.pop("nimg", 0),
                             "world_size": state.pop("world_size", 1),
                             "engine": "ddp" if state.get("optimizers") else "deepspeed"}
    state.setdefault("data", None)  # no record of the data settings: nothing to compare


def check_compatible(saved_cfg: dict, cfg: dict) -> list[str]:
    """Keys whose change would make the checkpoint meaningless (model shape, variant)."""
    bad = []
    for section, keys in STRUCTURAL:
        for k in keys:
            a, b = saved_cfg.get(section, {}).get(k), cfg.get(section, {}).get(k)
            if a != b:
                bad.append(f"{section}.{k}: checkpoint {a} vs config {b}")
    return bad


def config_changes(saved_cfg: dict, cfg: dict, prefix: str = "") -> list[str]:
    """Every other key that differs (accepted on resume, logged): `key: old -> new`."""
    out = []
    for k in sorted(set(saved_cfg) | set(cfg)):
        a, b = saved_cfg.get(k), cfg.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b and not (isinstance(a, (list, tuple)) and list(a) == list(b or [])):
            out.append(f"{prefix}{k}: {a} -> {b}")
    return out


def find_resume_target(run_dir: Path, path: str | None) -> tuple[Path | None, list[Path]]:
    """(checkpoint to load or None, incomplete folders that were skipped)."""
    skipped = incomplete_checkpoints(run_dir)
    if path:
        target = Path(path)
        if not target.is_dir():
            raise CheckpointError(f"checkpoint {target} does not exist")
        return target, skipped
    return latest(run_dir), skipped
