"""Clean stops before a cluster takes the machine away.

SIGTERM (preemption, `scancel`), SIGUSR1 (SLURM's `--signal=USR1@T` pre-timeout warning),
SIGUSR2 (submitit's choice of the same), a stop-request file `RUN/STOP` (written by the
sbatch scripts' trap, which reaches ranks that no signal reaches, e.g. torchrun workers in
their own sessions) and `train.time_budget_s` all only set a flag. Every
`train.stop_check_every` steps the ranks all-reduce that flag (MAX; the one host read of a
step that does not log), so all of them agree on the same last step, write
one checkpoint together and exit with `REQUEUE_EXIT_CODE`; no rank is left waiting in a
collective. Rank 0 also writes `RUN/REQUEUE`, which launchers that hide exit codes
(torchrun) can test instead."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch

from . import dist

REQUEUE_EXIT_CODE = 75  # EX_TEMPFAIL: "stopped cleanly with a checkpoint, run me again"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
STOP_FILE = "STOP"
REQUEUE_FILE = "REQUEUE"
_STARTED = time.time()  # this process (the module is imported at startup by the CLI)


class Preempted(Exception):
    """Training stopped early with a checkpoint written; the launcher should requeue."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"stopped at step {step} ({reason}); checkpoint written, requeue to go on")
        self.step, self.reason = step, reason


class PreemptGuard:
    """Installs the handlers on entry, restores the previous ones on exit."""

    def __init__(self, run_dir: Path, time_budget_s: float = 0.0,
                 device: torch.device | None = None):
        self.run_dir = Path(run_dir)
        self.budget = float(time_budget_s)
        self.device = device or torch.device("cpu")
        self.signal_name: str | None = None
        self.reason = ""
        self._t0 = time.monotonic()
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame) -> None:  # noqa: ARG002 - signal API
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> PreemptGuard:
        self._t0 = time.monotonic()
        if dist.is_main():  # a marker or an older stop request belongs to a previous run
            (self.run_dir / REQUEUE_FILE).unlink(missing_ok=True)
            stop = self.run_dir / STOP_FILE
            if stop.exists() and stop.stat().st_mtime < _STARTED:
                stop.unlink(missing_ok=True)
        dist.barrier()
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: no handlers, the other stops still work
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous.clear()

    def local_request(self) -> str:
        """Why this rank wants to stop ('' when it does not)."""
        if self.signal_name:
            return self.signal_name
        if dist.is_main() and (self.run_dir / STOP_FILE).exists():
            return "stop file"
        if self.budget > 0 and time.monotonic() - self._t0 >= self.budget:
            return f"time budget {self.budget:g}s"
        return ""

    def should_stop(self) -> bool:
        """Collective: True on every rank when any rank wants to stop."""
        return self.poll()[0]

    def poll(self, also: torch.Tensor | None = None) -> tuple[bool, list[float]]:
        """Collective: (any rank wants to stop, the values of `also`), in one host read;
        `also` holds rank-agreed device values read along (the guard's counters)."""
        mine = self.local_request()
        flag = dist.all_reduce_max(torch.tensor([1.0 if mine else 0.0], device=self.device))
        if also is not None:
            flag = torch.cat([flag.to(also.dtype), also.reshape(-1)])
        stop, *values = flag.tolist()
        if stop > 0:
            self.reason = mine or "another rank's request"
        return stop > 0, values

    def mark_requeue(self, step: int) -> None:
        if dist.is_main():
            (self.run_dir / REQUEUE_FILE).write_text(f"{step} {self.reason}\n")
