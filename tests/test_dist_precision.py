"""bf16 autocast on CPU: 50 steps of the `tiny` preset give finite losses and a moving k_t,
and the bf16 curves follow the fp32 ones (losses and controller stay fp32)."""

import math

import pytest

from tests.dist_util import check, load, single

pytestmark = [pytest.mark.dist, pytest.mark.slow]
# Stated tolerance (measured: L_d max |diff| 0.005; L_g, L_v mean |diff| 0.038 with single-step
# spikes to 0.23, the GAN's adversarial terms react chaotically to rounding; k max |diff|
# 8e-5 = 3% of its range): L_d per step within 0.03 (0.02 before the prior term, below);
# L_g, L_v mean |diff| over the 50 steps
# below 0.08; k_t per step within 10% of fp32's range of k.
# (Measured with train.threads=2; with one thread the curves part sooner, L_d up to 0.028
# apart by step 50: the comparison is chaotic in the summation order, so it keeps 2 threads.)
# With the full model's prior term (the default since 2026-11-29), AMD EPYC: L_d within 0.01
# to step 42, then one step 0.023 apart (step 47; 0.017 without the term); L_g, L_v mean
# |diff| 0.004-0.008 and k 0.2% of its range (1.5% without): L_d's bound is 0.03 since.
LD_ATOL = 0.03
ADV_MEAN_ATOL = 0.08
K_FRAC = 0.10


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    base = tmp_path_factory.mktemp("prec")
    out = {}
    for prec in ("fp32", "bf16"):
        check(single(base / prec, f"train.precision={prec}", "--max-steps", "50",
                     "--log-every", "1", "train.threads=2", "train.ckpt_every_kimg=100"))
        out[prec] = load(base / prec, 0)[0]["records"]
    return out


def test_bf16_fifty_steps_finite_and_k_moves(curves):
    rec = curves["bf16"]
    assert len(rec) == 50
    for r in rec:
        for key in ("L_d", "L_g", "L_v", "L_e", "L_n", "L_s", "k"):
            assert math.isfinite(r[key]), (r["step"], key)
    ks = [r["k"] for r in rec]
    assert max(ks) - min(ks) > 1e-3


def test_bf16_agrees_with_fp32(curves):
    a, b = curves["fp32"], curves["bf16"]
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["L_d"] - rb["L_d"]) < LD_ATOL, (ra["step"], ra["L_d"], rb["L_d"])
    for key in ("L_g", "L_v"):
        assert sum(abs(ra[key] - rb[key]) for ra, rb in zip(a, b, strict=True)) / 50 < ADV_MEAN_ATOL
    ka, kb = [r["k"] for r in a], [r["k"] for r in b]
    k_range = max(ka) - min(ka)
    assert max(abs(x - y) for x, y in zip(ka, kb, strict=True)) < K_FRAC * k_range
