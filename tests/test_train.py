"""End-to-end single-process training through the `vaegan-train` entry point."""

import json
import math

import pytest
from PIL import Image

from tests import procs
from vaegan_dist.variants import TERMS, VARIANTS

from .conftest import bin_path

KEYS = ("step", "nimg", "L_d", "L_g", "L_v", "L_e", "L_n", "L_s", "L_dis", "L_gen", "L_enc",
        "k", "M", "lr", "img_per_s")


def run(run_dir, *extra, steps=20, check=True):
    return procs.run([bin_path("vaegan-train"), "--config", "tiny", "--run-dir",
                      str(run_dir), "--max-steps", str(steps), "--log-every", "1", *extra],
                     check=check, timeout=600)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_200_steps_in_two_runs(tmp_path):
    """The tiny preset end to end, 200 steps; the same command again (raised to 200 steps)
    resumes the first run of 120 and logs every step once."""
    run(tmp_path, steps=120)
    r = run(tmp_path, steps=200)
    assert f"resumed from {tmp_path}/checkpoints/step-000000120" in r.stdout
    rec = records(tmp_path)
    assert [r["step"] for r in rec] == list(range(1, 201))
    assert rec[-1]["nimg"] == 200 * 16
    for r in rec:
        assert set(KEYS) <= set(r)
        assert all(math.isfinite(r[k]) for k in KEYS), r
    assert max(r["k"] for r in rec) > 0.0  # k_t leaves 0
    first = sum(r["M"] for r in rec[:10]) / 10
    last = sum(r["M"] for r in rec[-10:]) / 10
    assert last < first, (first, last)
    img = Image.open(tmp_path / "samples.png")
    assert img.size == (6 * 34 + 2, 6 * 34 + 2)  # 6x6 grid of 32px with 2px padding
    assert (tmp_path / "config.yaml").exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "step-000000200"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("variant", ["began", "began_star_lsm", "vae_began_star_lsm"])
def test_ablations_train_and_log_their_terms(tmp_path, variant):
    run(tmp_path, f"loss.variant={variant}", "model.n=8", "train.batch=8", steps=20)
    rec = records(tmp_path)
    assert len(rec) == 20
    for r in rec:
        for term in TERMS:
            if term in VARIANTS[variant].terms:
                assert isinstance(r[term], float) and math.isfinite(r[term]), (term, r)
            else:
                assert r[term] is None, (term, r)
    if variant == "began":  # integral-only controller: k moves by l1 * e_t exactly
        import yaml

        resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
        eta, l1 = resolved["loss"]["eta"], resolved["controller"]["l1"]
        k = 0.0
        for r in rec:
            e = eta * r["L_d"] - r["L_g"]
            assert r["e"] == pytest.approx(e, abs=1e-12)
            k = min(max(k + l1 * e, 0.0), 1.0)
            assert r["k"] == pytest.approx(k, abs=1e-12)

