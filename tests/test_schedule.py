"""BEGAN's optional lr halving when M stalls, with a floor, and its state round trip."""

import torch

from vaegan_dist.config import OptimConfig
from vaegan_dist.schedule import LrHalving


def make(**kw):
    cfg = OptimConfig(lr=1e-3, lr_halving=True, lr_patience_kimg=1.0, lr_floor=3e-4, **kw)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    return LrHalving(cfg, {"g": opt}), opt


def test_halves_after_patience_then_floors():
    sched, opt = make()
    assert sched.update(1.0, 100) == 1e-3  # new best
    assert sched.update(0.9, 200) == 1e-3  # new best at 200 images
    assert sched.update(2.0, 1100) == 1e-3  # 900 images without improvement: not yet
    assert sched.update(2.0, 1200) == 5e-4  # 1000 images: halve
    assert opt.param_groups[0]["lr"] == 5e-4
    assert sched.update(2.0, 1900) == 5e-4  # patience restarts after a halving
    assert sched.update(2.0, 2200) == 3e-4  # halving stops at the floor
    assert sched.update(2.0, 9000) == 3e-4


def test_disabled_by_default_and_state_round_trip():
    off = LrHalving(OptimConfig(lr=1e-3), {})
    assert off.update(5.0, 10**9) == 1e-3
    a, _ = make()
    a.update(1.0, 0)
    a.update(2.0, 1000)
    b, opt_b = make()
    b.load_state_dict(a.state_dict())
    assert b.lr == a.lr == 5e-4 and opt_b.param_groups[0]["lr"] == 5e-4
    assert b.update(2.0, 2000) == a.update(2.0, 2000)
