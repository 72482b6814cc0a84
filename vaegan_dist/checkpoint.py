"""Atomic checkpoints of the whole training state.

RUN/checkpoints/step-NNNNNNNNN/ holds `state.pt` (the trainer's registry of stateful parts,
state.py, plus the resolved config), `rng-rankR.pt` per rank,
`weights.safetensors` (inference snapshot) and `COMPLETE`, written last. Everything is
written into a temporary folder, fsynced, marked complete, then renamed: a folder under a
final name is always whole. Only rank 0 writes shared files."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import dist
from .fileio import sha256_file

MARKER = "COMPLETE"
CHECKSUMS = "checksums.json"  # SHA-256 of every file, written before the marker
STEP_NAME = re.compile(r"step-\d{9}")
DOOMED = ".old-"  # prefix of a pruned folder while it is deleted (never loaded or counted)
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


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (full disk, I/O error); raised on every rank after
    the partial folder is removed. Nothing complete was touched."""


SAVE_FAILED_EXIT_CODE = 74  # EX_IOERR


def _reason(e: BaseException, root: Path) -> str:
    """One line for a failed write, with the free space of the filesystem (a full disk
    shows up as odd errors from torch.save's zip writer)."""
    msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
    try:
        free = shutil.disk_usage(root).free / 2**20
        msg += f"; {free:.1f} MiB free on that filesystem"
    except OSError:
        pass
    return msg


def _agree(err: str) -> str:
    """Collective: the first rank's error of this phase, or '' when every rank succeeded."""
    return next((e for e in dist.all_gather_object(err) if e), "")


def save(run_dir: Path, step: int, state: dict, weights: dict[str, torch.Tensor],
         meta: dict[str, str], keep: int, shards: Callable[[Path], None] | None = None,
         checksums: bool = True) -> Path:
    """Collective: every rank calls it. `shards(folder)`, called on every rank, writes
    engine-owned files (DeepSpeed) into the temporary folder. Returns the final folder.
    A failed write (any rank, any file) removes the temporary folder and raises
    CheckpointWriteError on every rank; complete checkpoints are never touched."""
    root = Path(run_dir) / "checkpoints"
    final = step_dir(run_dir, step)
    tmp = root / f".tmp-step-{step:09d}"
    previous = latest(run_dir)

    def failed(err: str) -> CheckpointWriteError:
        if dist.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        intact = (f"the previous checkpoint {previous} is intact" if previous else
                  "there is no earlier checkpoint")
        return CheckpointWriteError(f"could not write checkpoint {final} ({err}); {intact}; "
                                    "the partial folder was removed")

    err = ""
    if dist.is_main():
        try:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        except OSError as e:
            err = _reason(e, root)
    if err := _agree(err):
        raise failed(err)
    exists = (final / MARKER).exists()  # saved already (the same step again): kept as is
    if not exists:
        try:  # every rank: its own files
            _save(rng_state(), tmp / f"rng-rank{dist.rank()}.pt")
        except (OSError, RuntimeError) as e:
            err = _reason(e, root)
        if shards is not None and not _agree(err):
            shards(tmp)  # collective inside DeepSpeed: all ranks or none
    if err := _agree(err):
        raise failed(err)
    if dist.is_main() and not exists:
        try:
            _write_shared(tmp, final, root, step, state, weights, meta, checksums)
        except (OSError, RuntimeError) as e:
            err = _reason(e, root)
        else:
            prune(root, keep)
    elif dist.is_main() and tmp.exists():
        shutil.rmtree(tmp)
    if err := _agree(err):
        raise failed(err)
    dist.barrier()
    return final


def _write_shared(tmp: Path, final: Path, root: Path, step: int, state: dict,
                  weights: dict[str, torch.Tensor], meta: dict[str, str],
                  checksums: bool) -> None:
    """Rank 0: the shared files, the checksums, the marker last, then the rename."""
    from safetensors.torch import save_file

    _save(state, tmp / "state.pt")
    if os.environ.get(DELAY_ENV):
        time.sleep(float(os.environ[DELAY_ENV]))
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
              str(tmp / "weights.safetensors"), metadata=meta)
    if checksums:
        sums = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*"))
                if p.is_file()}
        with open(tmp / CHECKSUMS, "w") as f:
            json.dump(sums, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    with open(tmp / MARKER, "w") as f:
        f.write(f"{step}\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    if final.exists():  # incomplete under the final name (left by an older prune): replaced
        _doom(final)  # deleted by prune, after this save
    tmp.rename(final)
    _fsync_dir(root)


def _doom(path: Path) -> None:
    """Move a step folder out of its final name (atomic) before it is deleted; an old
    namesake of the hidden name (a killed prune's) goes first, so the rename cannot fail
    on it."""
    doomed = path.with_name(f"{DOOMED}{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop leftovers of interrupted writes.
    Oldest first, so a kill during pruning never removes the newest complete one. Each old
    folder is renamed to a hidden name before it is deleted: rmtree removes files in any
    order, and a kill after it removed the marker left an incomplete folder under a final
    name (CI, test_resume_kill)."""
    for old in complete_checkpoints(root.parent)[:-max(keep, 1)]:
        try:
            _doom(old)
        except OSError as e:  # kept whole; a failed prune costs disk, never the run
            print(f"could not prune {old}: {_reason(e, root)}", file=sys.stderr)
    try:
        _fsync_dir(root)
    except OSError:  # the renames' durability only; the new checkpoint is synced already
        pass
    for stale in [*root.glob(".tmp-step-*"), *root.glob(f"{DOOMED}step-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _is_step_dir(p: Path) -> bool:
    return p.is_dir() and STEP_NAME.fullmatch(p.name) is not None


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if _is_step_dir(p) and (p / MARKER).exists())


def incomplete_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.name.startswith(".tmp-") or (_is_step_dir(p) and not (p / MARKER).exists()))


def set_aside(path: Path) -> Path:
    """Collective: rename an unreadable checkpoint out of the way (kept for inspection, no
    longer loaded, counted or overwritten by a later save of the same step)."""
    aside = path.with_name(path.name + ".unreadable")
    if dist.is_main() and path.exists():
        n = 1
        while aside.exists():
            n += 1
            aside = path.with_name(f"{path.name}.unreadable{n}")
        path.rename(aside)
    dist.barrier()
    return aside


def latest(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def verify_checksums(path: Path, names: list[str] | None = None) -> list[str]:
    """Files of a checkpoint whose SHA-256 differs from the one recorded at save time
    (all recorded files, or `names`); [] when they match or none were recorded."""
    path = Path(path)
    try:
        recorded = json.loads((path / CHECKSUMS).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return [CHECKSUMS]
    bad = []
    for name in names if names is not None else list(recorded):
        f = path / name
        if name in recorded and (not f.is_file() or sha256_file(f) != recorded[name]):
            bad.append(name)
    return bad


def load(path: Path, map_location: str | torch.device = "cpu",
         verify: bool = True) -> tuple[dict, dict | None]:
    """(shared state, this rank's RNG state or None) with `weights_only=True`; with
    `verify`, the files read are first checked against the checksums recorded at save."""
    path = Path(path)
    if not (path / MARKER).exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    rng_name = f"rng-rank{dist.rank()}.pt"
    if verify:
        bad = verify_checksums(path, ["state.pt", rng_name])
        if bad:
            raise CheckpointError(f"{path}: checksum mismatch in {', '.join(bad)} "
                                  "(the file changed after it was written)")
    try:
        state = torch.load(path / "state.pt", map_location=map_location, weights_only=True)
        rng_file = path / rng_name
        rng = torch.load(rng_file, weights_only=True) if rng_file.exists() else None
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0]}") from e
    return state, rng


@dataclass
class Report:
    """What `vaegan-ckpt verify` says of one checkpoint folder."""

    path: Path
    complete: bool
    ok: bool
    detail: str


def verify(path: Path) -> Report:
    """Complete? checksums? state readable and finite? (one folder, read-only)"""
    from .guard import nonfinite_paths

    if not (path / MARKER).exists():
        return Report(path, False, False, f"incomplete (no {MARKER} marker): ignored")
    bad = verify_checksums(path)
    if bad:
        return Report(path, True, False, f"checksum mismatch: {', '.join(bad)}")
    sums = "checksums ok" if (path / CHECKSUMS).exists() else "no checksums recorded"
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return Report(path, True, False, f"state.pt unreadable: {str(e).splitlines()[0]}")
    nonfinite = nonfinite_paths({k: state.get(k) for k in ("models", "optimizers",
                                                             "controller")})
    if nonfinite:
        return Report(path, True, False, f"non-finite values in {', '.join(nonfinite[:3])}")
    step = state.get("progress", state).get("step")
    return Report(path, True, True, f"step {step}, {sums}, readable, finite")


def verify_all(run_dir: Path) -> list[Report]:
    """A report per checkpoint folder of a run (set-aside ones included), oldest first."""
    root = Path(run_dir) / "checkpoints"
    return [verify(p) for p in sorted(root.iterdir())
            if p.is_dir() and p.name.startswith("step-")]


def upgrade(state: dict) -> None:
    """Checkpoints written before the state registry (step, nimg and world_size at the top,
    no data part) load as the registry expects."""
    if "progress" not in state:
        state["progress"] = {"step": state.pop("step"), "nimg": state.pop("nimg", 0),
                             "world_size": state.pop("world_size", 1),
                             "engine": "ddp" if state.get("optimizers") else "deepspeed"}
    state.setdefault("data", None)  # no record of the data settings: nothing to compare
    state.setdefault("guard", None)  # no guard counters saved: start them at zero


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
