"""The equilibrium controller of Eqs. 10-12: a velocity-form PID on k_t, clamped to [0, 1]
(vocabulary and BEGAN's integral-only special case: variants.py).

The state (k, e_{t-1}, e_{t-2}) lives on the training device as float64 tensors and is
updated by tensor operations from the all-reduced global-batch means, so a step never waits
for the host, and every rank computes bit-identical k_t without a broadcast. Each operation
is the same IEEE double operation, in the same order, as the float arithmetic of the
recurrence, so the k sequence equals that of a plain-float implementation bit for bit
(tests/test_controller.py). Checkpoints hold plain floats."""

from __future__ import annotations

import torch

from .losses import ERROR_READINGS, Number, controller_error

# absolute: e_t as losses.controller_error gives it (the paper's; in units of the energies)
# relative: e_t / L_d, the distance of the ratio (fake energy / real energy) from eta, so the
#   speed of k_t does not depend on the scale of the energies (data set, width, lr), and a
#   step can raise k_t by at most l1 * eta (bench/results/fidelity.md)
ERROR_SCALES = ("absolute", "relative")


class PIDController:
    """e_t = eta L_d - (L_g + alpha L_v), or another `reading` (losses.controller_error),
    divided by L_d when `scale` is 'relative';
    k_t = clip(k_{t-1} + l1 e_t + l2 (e_t - e_{t-1}) + l3 (e_t - 2e_{t-1} + e_{t-2}), 0, 1)."""

    def __init__(self, l1: float, l2: float, l3: float, eta: float, alpha: float,
                 k0: float = 0.0, device: torch.device | str = "cpu", reading: str = "eq10",
                 scale: str = "absolute"):
        if reading not in ERROR_READINGS:
            raise ValueError(f"unknown controller error reading '{reading}' "
                             f"({', '.join(ERROR_READINGS)})")
        if scale not in ERROR_SCALES:
            raise ValueError(f"unknown controller error scale '{scale}' "
                             f"({', '.join(ERROR_SCALES)})")
        self.scale = scale
        self.l1, self.l2, self.l3 = float(l1), float(l2), float(l3)
        self.eta, self.alpha, self.reading = float(eta), float(alpha), reading
        self.device = torch.device(device)
        self.k = self._t(k0)
        self.e1 = self._t(0.0)  # e_{t-1}
        self.e2 = self._t(0.0)  # e_{t-2}
        # monitoring, not state: updates that ended with k at 0 or 1 (the health monitor)
        self.clamped = self._t(0.0)

    def _t(self, v: Number) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64, device=self.device)

    def error(self, L_d: Number, L_g: Number, L_v: Number = 0.0) -> torch.Tensor:
        L_d = self._t(L_d)
        e = controller_error(L_d, self._t(L_g), self._t(L_v), self.eta, self.alpha,
                             self.reading)
        # a floor on L_d: a D that reconstructs real images exactly must not give an infinite e
        return e / L_d.clamp_min(1e-8) if self.scale == "relative" else e

    def update(self, L_d: Number, L_g: Number, L_v: Number = 0.0,
               apply: torch.Tensor | None = None) -> torch.Tensor:
        """Advance one iteration; returns k_t (used by the next step's L_dis). `apply` (a
        bool tensor) False leaves the state unchanged, decided on the device."""
        e = self.error(L_d, L_g, L_v)
        k = (self.k + self.l1 * e + self.l2 * (e - self.e1)
             + self.l3 * (e - 2.0 * self.e1 + self.e2)).clamp(0.0, 1.0)
        if apply is not None:
            k, e, e1 = (torch.where(apply, new, old) for new, old in
                        ((k, self.k), (e, self.e1), (self.e1, self.e2)))
            self.k, self.e2, self.e1 = k, e1, e
        else:
            self.k, self.e2, self.e1 = k, self.e1, e
        self.clamped = self.clamped + ((self.k <= 0.0) | (self.k >= 1.0)).double()
        return self.k

    def state_dict(self) -> dict:
        return {"k": float(self.k), "e1": float(self.e1), "e2": float(self.e2)}

    def load_state_dict(self, state: dict) -> None:
        self.k = self._t(float(state["k"]))
        self.e1 = self._t(float(state["e1"]))
        self.e2 = self._t(float(state["e2"]))
