"""BEGAN's learning-rate practice, optional: halve every optimiser's lr when the
convergence measure M has not reached a new best for `lr_patience_kimg` thousand images,
never below `lr_floor`. M is a global-batch statistic, so every rank decides alike."""

from __future__ import annotations

import torch

from .config import OptimConfig


class LrHalving:
    def __init__(self, cfg: OptimConfig, optimizers: dict[str, torch.optim.Optimizer]):
        self.cfg, self.optimizers = cfg, optimizers
        self.lr = cfg.lr
        self.best = float("inf")
        self.best_nimg = 0

    def update(self, M: float, nimg: int) -> float:
        if not self.cfg.lr_halving:
            return self.lr
        if M < self.best:
            self.best, self.best_nimg = M, nimg
        elif (nimg - self.best_nimg >= self.cfg.lr_patience_kimg * 1000
              and self.lr > self.cfg.lr_floor):
            self.lr = max(self.lr / 2, self.cfg.lr_floor)
            self.best_nimg = nimg  # wait a full patience again before the next halving
            self._apply()
        return self.lr

    def set(self, lr: float) -> None:
        """A new learning rate for every optimiser (the divergence guard's rollback); kept
        in this schedule's state, so checkpoints and resumes carry it."""
        self.lr = lr
        self._apply()

    def _apply(self) -> None:
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g["lr"] = self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "best": self.best, "best_nimg": self.best_nimg}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.best_nimg = int(state["best_nimg"])
        self._apply()
