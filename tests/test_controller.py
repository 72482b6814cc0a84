"""The PID controller against a trajectory computed by hand, with clamping."""

import random

import pytest
import torch

from vaegan_dist.controller import PIDController
from vaegan_dist.variants import VARIANTS

# (L_d, L_g, L_v) -> (e_t, k_t) with l1, l2, l3 = 0.5, 0.1, 0.05, eta 0.5, alpha 0.3:
#  t1: e = 0.5*1.0 - (0.1 + 0)        = 0.4;   k = 0 + .2 + .1(.4) + .05(.4)        = 0.26
#  t2: e = 0.5*2.0 - (0.2 + .3*.5)    = 0.65;  k = .26 + .325 + .1(.25) + .05(-.15) = 0.6025
#  t3: e = 1.0 - (0.1 + 0.03)         = 0.87;  raw 1.058 -> clamped to 1
#  t4: e = 0.1 - (1.5 + 0.3)          = -1.7;  raw -0.2465 -> clamped to 0
#  t5: e = 0.1 - (2.0 + 0.3)          = -2.2;  raw -1.0465 -> 0
#  t6: e = 0.25 - (0.2 + 0.03)        = 0.02;  k = 0 + .01 + .1(2.22) + .05(.02 + 4.4 - 1.7)
#                                                  = 0.368
#  t7: e = 0.2 - (0.3 + 0.06)         = -0.16; k = .368 - .08 - .018 + .05(-.16 - .04 - 2.2)
#                                                  = 0.15
SEQ = [(1.0, 0.1, 0.0), (2.0, 0.2, 0.5), (2.0, 0.1, 0.1), (0.2, 1.5, 1.0), (0.2, 2.0, 1.0),
       (0.5, 0.2, 0.1), (0.4, 0.3, 0.2)]
K = [0.26, 0.6025, 1.0, 0.0, 0.0, 0.368, 0.15]
E = [0.4, 0.65, 0.87, -1.7, -2.2, 0.02, -0.16]


def make():
    return PIDController(0.5, 0.1, 0.05, eta=0.5, alpha=0.3)


def test_trajectory_with_clamping():
    c = make()
    for (ld, lg, lv), k, e in zip(SEQ, K, E):
        assert float(c.update(ld, lg, lv)) == pytest.approx(k, abs=1e-12)
        assert float(c.e1) == pytest.approx(e, abs=1e-12)


def test_state_dict_round_trip_mid_sequence():
    full = make()
    ks_full = [float(full.update(*s)) for s in SEQ]
    first = make()
    for s in SEQ[:4]:
        first.update(*s)
    second = make()
    second.load_state_dict(first.state_dict())
    ks_resumed = [float(second.update(*s)) for s in SEQ[4:]]
    assert ks_resumed == ks_full[4:]  # bit-identical, not approximately


def test_began_variant_is_integral_gain_only():
    c = PIDController(*VARIANTS["began"].gains(0.1, 0.7, 0.7), eta=0.5, alpha=0.0)
    assert float(c.update(1.0, 0.1)) == pytest.approx(0.1 * 0.4)
    assert float(c.update(1.0, 0.3)) == pytest.approx(0.04 + 0.1 * 0.2)


def test_initial_k_and_clamp_at_one():
    c = PIDController(10.0, 0.0, 0.0, eta=1.0, alpha=0.0, k0=0.9)
    assert float(c.k) == 0.9
    assert float(c.update(1.0, 0.0)) == 1.0


def plain_float_pid(seq, l1, l2, l3, eta, alpha):
    """The recurrence of SPEC in Python floats: the reference the device state must equal
    bit for bit."""
    k = e1 = e2 = 0.0
    out = []
    for ld, lg, lv in seq:
        e = eta * ld - (lg + alpha * lv)
        k = min(max(k + l1 * e + l2 * (e - e1) + l3 * (e - 2.0 * e1 + e2), 0.0), 1.0)
        e2, e1 = e1, e
        out.append(k)
    return out


def test_tensor_state_equals_the_float_recurrence_bit_for_bit():
    rng = random.Random(0)
    seq = [(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(2000)]
    gains = (1e-3, 1e-5, 1e-5)
    c = PIDController(*gains, eta=0.5, alpha=0.3)
    got = [float(c.update(*(torch.tensor(v, dtype=torch.float64) for v in s))) for s in seq]
    want = plain_float_pid(seq, *gains, 0.5, 0.3)
    assert [k.hex() for k in got] == [k.hex() for k in want]
    assert 0 < max(got) < 1  # the sequence moves and is not clamped throughout


def test_state_lives_on_the_device_and_checkpoints_as_floats():
    c = PIDController(1e-3, 1e-5, 1e-5, eta=0.5, alpha=0.3, k0=0.25, device="meta")
    k = c.update(torch.zeros((), dtype=torch.float64, device="meta"), 0.1, 0.2)
    assert k.device.type == "meta" and k.dtype == torch.float64
    cpu = PIDController(1e-3, 1e-5, 1e-5, eta=0.5, alpha=0.3, k0=0.25)
    cpu.update(0.4, 0.1, 0.2)
    assert all(type(v) is float for v in cpu.state_dict().values())


def test_masked_update_leaves_the_state_unchanged():
    c = PIDController(0.5, 0.1, 0.05, eta=0.5, alpha=0.3)
    c.update(*SEQ[0])
    before = c.state_dict()
    c.update(*SEQ[1], apply=torch.tensor(False))
    assert c.state_dict() == before
    c.update(*SEQ[1], apply=torch.tensor(True))
    assert float(c.k) == pytest.approx(K[1], abs=1e-12)


def test_relative_scale_divides_the_error_by_the_real_energy():
    """controller.scale=relative: e_t / L_d, so multiplying every energy by s leaves the k
    sequence unchanged (the absolute one moves s times as fast), and a step raises k by at
    most l1 * eta however small the energies are."""
    rng = random.Random(1)
    seq = [(rng.uniform(0.05, 1), rng.uniform(0, 1), rng.uniform(0, 1)) for _ in range(200)]
    gains = (1e-2, 1e-3, 1e-3)
    ref = PIDController(*gains, eta=1.5, alpha=0.3, reading="weighted_mean", scale="relative")
    for ld, lg, lv in seq[:3]:
        ref.update(ld, lg, lv)
        want = (1.5 * ld - (lg + 0.3 * lv) / 1.3) / ld  # independent of controller_error
        assert float(ref.e1) == pytest.approx(want, rel=1e-12)

    def ks(s: float, scale: str) -> list[float]:
        c = PIDController(*gains, eta=1.5, alpha=0.3, reading="weighted_mean", scale=scale)
        return [float(c.update(s * ld, s * lg, s * lv)) for ld, lg, lv in seq]

    assert ks(0.01, "relative") == pytest.approx(ks(1.0, "relative"), abs=1e-12)
    assert ks(0.01, "absolute") != pytest.approx(ks(1.0, "absolute"), abs=1e-3)
    c = PIDController(1e-3, 0.0, 0.0, eta=1.5, alpha=0.0, scale="relative")
    assert float(c.update(1e-6, 0.0)) == pytest.approx(1.5e-3)  # G's images cost D nothing
    assert float(c.update(0.0, 0.0)) == pytest.approx(1.5e-3)  # L_d = 0: finite, unchanged
    with pytest.raises(ValueError, match="scale"):
        PIDController(1e-3, 0, 0, 0.5, 0.3, scale="log")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_trainer_builds_the_configured_controller(variant):
    """config -> train.build_controller: the scale, reading, eta and the variant's gains
    reach the controller (BEGAN: integral only; without a VAE alpha weighs nothing)."""
    from vaegan_dist.config import build_config
    from vaegan_dist.train import build_controller

    cfg = build_config("tiny", [f"loss.variant={variant}", "controller.scale=relative",
                                "loss.error_reading=eq10", "controller.k0=0.25"])
    c = build_controller(cfg, VARIANTS[variant], torch.device("cpu"))
    assert (c.scale, c.reading, c.eta, float(c.k)) == ("relative", "eq10", cfg.loss.eta, 0.25)
    assert (c.l1, c.l2, c.l3) == VARIANTS[variant].gains(*(getattr(cfg.controller, g)
                                                           for g in ("l1", "l2", "l3")))
    assert c.alpha == (cfg.loss.alpha if VARIANTS[variant].vae else 0.0)
    assert build_controller(build_config("tiny", []), VARIANTS[variant],
                            torch.device("cpu")).scale == "absolute"  # the default
