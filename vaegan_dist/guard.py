"""The divergence guard: a step whose losses or gradients are not finite updates nothing.

Each step computes, on the device, whether every loss term (the global-batch means, so a
NaN on any rank counts everywhere) and every gradient (after DDP's all-reduce, plus each
rank's own check, all-reduced with the statistics) is finite. A bad step skips every
optimiser update (fused Adam's device-side `found_inf`, like the fp16 loss scaler's skipped
step; other optimisers read the flag on the host) and leaves the controller unchanged.
The counters below stay on the device; the trainer reads them with the stop-request check.
After `guard_rollback_after` bad steps in a row it rolls back to the newest complete
checkpoint (whose state is finite: a non-finite state is never saved), optionally with the
learning rate scaled by `guard_lr_scale`; after `guard_max_rollbacks` rollbacks the run
stops with DIVERGED_EXIT_CODE, which no requeue loop restarts."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable

import torch

from . import dist

DIVERGED_EXIT_CODE = 65  # EX_DATAERR: the run diverged; running it again will not help


class Diverged(Exception):
    """Training diverged past what the guard may repair; printed as one line."""


class GuardState:
    """The guard's counters: on the device while training (no host read per step), plain
    integers in a checkpoint. `streak` is the number of bad steps in a row, `skipped` all
    bad steps so far, `rollbacks` the rollbacks so far (kept across a rollback)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.streak = torch.zeros((), dtype=torch.float64, device=device)
        self.skipped = torch.zeros((), dtype=torch.float64, device=device)
        self.rollbacks = 0

    def record(self, ok: torch.Tensor) -> None:
        bad = (~ok).double()
        self.streak = (self.streak + bad) * bad
        self.skipped = self.skipped + bad

    def state_dict(self) -> dict:
        return {"skipped": int(self.skipped), "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict | None) -> None:
        state = state or {}
        self.skipped = torch.tensor(float(state.get("skipped", 0)), dtype=torch.float64,
                                    device=self.device)
        self.streak = torch.zeros_like(self.skipped)
        self.rollbacks = int(state.get("rollbacks", 0))


def grads_finite(params: list[torch.Tensor]) -> torch.Tensor:
    """True (a bool tensor on the device) when every gradient is finite; one fused norm per
    device, no host read."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=params[0].device)
    return torch.stack(torch._foreach_norm(grads)).isfinite().all()


def nonfinite_paths(state, prefix: str = "") -> list[str]:
    """Where a nested state (dicts, lists, tensors, floats) holds NaN or inf: the paths."""
    out: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            out.append(prefix)
    elif isinstance(state, float):
        if not math.isfinite(state):
            out.append(prefix)
    elif isinstance(state, dict):
        for k, v in state.items():
            out += nonfinite_paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out += nonfinite_paths(v, f"{prefix}[{i}]")
    return out


# Test-only fault injection, documented for the tests that need a real non-finite step:
# VAEGAN_TEST_NONFINITE='{"from": 8, "to": 12, "rank": 1, "replay": false}' turns this
# rank's input images into NaN at steps from <= s < to ("rank" null: every rank), once per
# step unless "replay" is true (then also when a rollback replays the step).
FAULT_ENV = "VAEGAN_TEST_NONFINITE"


def fault_from_env() -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    f = json.loads(spec)
    done: set[int] = set()

    def fault(step: int, x: torch.Tensor) -> torch.Tensor:
        rank = f.get("rank")
        if (f["from"] <= step < f["to"] and rank in (None, dist.rank())
                and (f.get("replay") or step not in done)):
            done.add(step)
            return torch.full_like(x, float("nan"))
        return x

    return fault
