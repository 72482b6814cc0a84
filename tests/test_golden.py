"""Golden trajectories: each variant's fixed 12-step run (tests/golden.py) reproduces the
recorded statistics and final weights. Bit for bit on the machine that recorded them (the
refactors of the step, engine and state registry must not change a single bit); to a
relative 1e-3 on another CPU or torch build, where float rounding may differ."""

import json
import math

import pytest
import torch

from . import golden


@pytest.fixture(scope="module")
def recorded():
    return json.loads(golden.GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(golden.RUNS))
def test_run_matches_golden(recorded, name):
    torch.set_num_threads(1)
    got = golden.run(name)
    want = recorded["runs"][name]
    exact = recorded["machine"] == golden.machine()
    assert len(got["stats"]) == len(want["stats"])
    for g, w in zip(got["stats"], want["stats"], strict=True):
        for key, wv in w.items():  # keys added since the recording are not compared
            gv, wv = golden.decode(g[key]), golden.decode(wv)
            if exact or not isinstance(wv, float):
                assert gv == wv, (name, g["step"], key, gv, wv)
            else:
                assert math.isclose(gv, wv, rel_tol=1e-3, abs_tol=1e-6), (name, key, gv, wv)
    if exact:
        assert got["weights_sha256"] == want["weights_sha256"], name
