"""The equilibrium controller of Eqs. 10-12: a velocity-form PID on k_t, clamped to [0, 1].
BEGAN's proportional-only controller (k += l1 e) is the same object with l2 = l3 = 0.
State is kept in Python floats (float64) and is fed global-batch means, so every rank
computes bit-identical k_t without a broadcast."""

from __future__ import annotations

from .losses import controller_error


class PIDController:
    """e_t = eta L_d - (L_g + alpha L_v), or another `reading` (losses.controller_error);
    k_t = clip(k_{t-1} + l1 e_t + l2 (e_t - e_{t-1}) + l3 (e_t - 2 e_{t-1} + e_{t-2}), 0, 1)."""

    def __init__(self, l1: float, l2: float, l3: float, eta: float, alpha: float,
                 k0: float = 0.0, reading: str = "eq10"):
        self.l1, self.l2, self.l3 = float(l1), float(l2), float(l3)
        self.eta, self.alpha = float(eta), float(alpha)
        self.reading = reading
        controller_error(0.0, 0.0, 0.0, self.eta, self.alpha, reading)  # unknown: ValueError
        self.k = float(k0)
        self.e1 = 0.0  # e_{t-1}
        self.e2 = 0.0  # e_{t-2}
        self.steps = 0

    def error(self, L_d: float, L_g: float, L_v: float = 0.0) -> float:
        return controller_error(L_d, L_g, L_v, self.eta, self.alpha, self.reading)

    def update(self, L_d: float, L_g: float, L_v: float = 0.0) -> float:
        """Advance one iteration; returns k_t (used by the next step's L_dis)."""
        e = self.error(L_d, L_g, L_v)
        k = (self.k + self.l1 * e + self.l2 * (e - self.e1)
             + self.l3 * (e - 2.0 * self.e1 + self.e2))
        self.k = min(max(k, 0.0), 1.0)
        self.e2, self.e1 = self.e1, e
        self.steps += 1
        return self.k

    def state_dict(self) -> dict:
        return {"k": self.k, "e1": self.e1, "e2": self.e2, "steps": self.steps,
                "gains": [self.l1, self.l2, self.l3], "eta": self.eta, "alpha": self.alpha,
                "reading": self.reading}

    def load_state_dict(self, state: dict) -> None:
        self.k = float(state["k"])
        self.e1 = float(state["e1"])
        self.e2 = float(state["e2"])
        self.steps = int(state.get("steps", 0))
