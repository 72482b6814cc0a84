"""The PID controller against a trajectory computed by hand, with clamping."""

import pytest

from vaegan_dist.controller import PIDController

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
        assert c.update(ld, lg, lv) == pytest.approx(k, abs=1e-12)
        assert c.e1 == pytest.approx(e, abs=1e-12)
    assert c.steps == len(SEQ)


def test_state_dict_round_trip_mid_sequence():
    full = make()
    ks_full = [full.update(*s) for s in SEQ]
    first = make()
    for s in SEQ[:4]:
        first.update(*s)
    second = make()
    second.load_state_dict(first.state_dict())
    ks_resumed = [second.update(*s) for s in SEQ[4:]]
    assert ks_resumed == ks_full[4:]  # bit-identical, not approximately


def test_p_only_variant_is_integral_gain_only():
    c = PIDController(0.1, 0.0, 0.0, eta=0.5, alpha=0.0)
    assert c.update(1.0, 0.1) == pytest.approx(0.1 * 0.4)
    assert c.update(1.0, 0.3) == pytest.approx(0.04 + 0.1 * 0.2)


def test_initial_k_and_clamp_at_one():
    c = PIDController(10.0, 0.0, 0.0, eta=1.0, alpha=0.0, k0=0.9)
    assert c.k == 0.9
    assert c.update(1.0, 0.0) == 1.0
