"""One record per loss variant (variants.py), read everywhere: config validation, the models
built, the step's phases, the terms logged and the controller. Every record trains through
the real trainer, and a new variant needs nothing but its record."""

import json
import math

import pytest
import torch

from vaegan_dist import variants
from vaegan_dist.config import ConfigError, build_config
from vaegan_dist.losses import l1
from vaegan_dist.models import build_models
from vaegan_dist.train import Trainer
from vaegan_dist.variants import TERMS, VARIANTS, Variant

SMALL = ["model.n=8", "model.latent=8", "model.d_latent=8", "train.batch=4", "train.kimg=0.012",
         "train.log_every_kimg=0.004", "train.image_every_kimg=0", "train.grid=2",
         "data.num_images=32", "train.threads=1"]


def train(tmp_path, name: str) -> tuple[Trainer, list[dict]]:
    cfg = build_config("tiny", [*SMALL, f"loss.variant={name}", f"run_dir={tmp_path}",
                                "controller.k0=0.5", "controller.l1=1e-3", "controller.l2=0.5",
                                "controller.l3=0.5"])
    trainer = Trainer(cfg)
    trainer.fit()
    lines = (tmp_path / "stats.jsonl").read_text().splitlines()
    return trainer, [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_is_read_from_its_record(tmp_path, name):
    v = VARIANTS[name]
    trainer, recs = train(tmp_path, name)
    assert tuple(trainer.models) == v.models
    assert trainer.step_fn.phases == list(v.phases)
    assert [m for m, _ in v.phases] == [m for m in v.models if m != "disc"] + ["disc"]
    c = trainer.controller
    assert (c.l1, c.l2, c.l3) == v.gains(1e-3, 0.5, 0.5)
    assert len(recs) == 3
    for r in recs:
        for term in TERMS:
            if term in v.terms:
                assert math.isfinite(r[term]), (term, r)
            else:
                assert r[term] is None, (term, r)
        assert ("active_units" in r) == v.vae


def test_unknown_variant_names_the_records():
    with pytest.raises(ConfigError, match="began, began_star_lsm, vae_began_star_lsm"):
        build_config("tiny", ["loss.variant=gan"])


def _began_vae(f, cfg, k):
    """A made-up ablation for this test: BEGAN's losses with the VAE's posterior samples as
    further fakes and the VAE's own terms on the encoder."""
    t = {"L_d": l1(f.x, f.rec_d), "L_g": l1(f.x_g, f.rec_g), "L_v": l1(f.x_v, f.rec_v),
         "L_e": l1(f.x, f.x_v)}
    t["L_dis"] = t["L_d"] - k * (t["L_g"] + t["L_v"])
    t["L_gen"] = t["L_g"] + t["L_v"]
    t["L_enc"] = t["L_e"]
    return t


def test_a_new_variant_is_one_record(tmp_path, monkeypatch):
    new = Variant("began_vae", vae=True, terms=("L_d", "L_g", "L_v", "L_e", "L_dis", "L_gen",
                                                "L_enc"), pid=False, losses=_began_vae)
    monkeypatch.setitem(variants.VARIANTS, new.name, new)
    trainer, recs = train(tmp_path, "began_vae")
    assert tuple(trainer.models) == ("encoder", "decoder", "disc")
    assert (trainer.controller.l2, trainer.controller.l3) == (0.0, 0.0)
    assert recs[-1]["L_s"] is None and math.isfinite(recs[-1]["L_enc"])
    torch.manual_seed(trainer.cfg.train.seed)
    initial = build_models(trainer.cfg.model, vae=True)["encoder"]
    moved = [not torch.equal(a, b) for a, b in zip(initial.parameters(),
                                                   trainer.models["encoder"].parameters())]
    assert any(moved)  # its encoder phase trained the encoder
