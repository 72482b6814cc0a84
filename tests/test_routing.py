"""Gradient routing (Algorithm 1): each optimiser applies exactly the gradient of its own
loss, computed by a naive reference with separate forwards; D is untouched by L_gen and
L_enc; and the shared step runs each module's forward once per micro-batch."""

import pytest
import torch

from vaegan_dist.config import LossConfig, build_config
from vaegan_dist.controller import PIDController
from vaegan_dist.engine import build_engine
from vaegan_dist.models import build_models
from vaegan_dist.reference import naive_grads
from vaegan_dist.step import TrainStep, step_noise
from vaegan_dist.variants import VARIANTS


class RecordingOptimizer(torch.optim.Optimizer):
    """Records the gradients it is asked to apply; leaves the parameters unchanged."""

    def __init__(self, params):
        super().__init__(params, {})
        self.applied: list[torch.Tensor | None] = []

    def step(self, closure=None):
        self.applied = [None if p.grad is None else p.grad.clone()
                        for g in self.param_groups for p in g["params"]]


CFG = build_config("tiny", ["model.n=4", "model.latent=3", "model.d_latent=5"])


def setup(k: float = 0.3, seed: int = 0):
    torch.manual_seed(seed)
    cfg = CFG.model
    models = build_models(cfg, vae=True)
    for m in models.values():
        m.double()
    opts = {n: RecordingOptimizer(m.parameters()) for n, m in models.items()}
    ctrl = PIDController(1e-3, 1e-5, 1e-5, eta=0.5, alpha=0.3, k0=k)
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64) * 2 - 1
    return cfg, models, opts, ctrl, x


def make_step(models, opts, ctrl, latent: int, seed: int,
              loss_cfg: LossConfig | None = None) -> TrainStep:
    """The step as the trainer builds it: the trainer's engine (build_engine) for the
    configured train.* options, around these models and optimisers."""
    engine = build_engine(CFG, models, opts, torch.device("cpu"))
    return TrainStep(engine, ctrl, VARIANTS["vae_began_star_lsm"], loss_cfg or LossConfig(),
                     latent, seed)


@pytest.mark.parametrize("k, ls_prior, gen_scale, pullaway", [
    (0.0, False, "none", 0.0), (0.37, False, "none", 0.0), (0.37, True, "none", 0.0),
    (0.37, True, "rms", 0.0), (0.37, True, "none", 0.25)])
def test_step_applies_each_loss_gradient_to_its_own_module(k, ls_prior, gen_scale, pullaway):
    """ls_prior adds beta L_sg (prior samples' latents against the reals') to L_gen only;
    ls_gen_scale=rms divides L_gen's similarity terms by a detached statistic; pullaway adds
    EBGAN's pull-away term of D's latents of G(z) to L_gen only (D is not moved by it)."""
    cfg, models, opts, ctrl, x = setup(k)
    if pullaway:  # at init D's latents of the (near-constant) fakes are parallel, where the
        with torch.no_grad():  # term is flat: without D's biases they are not
            for name, p in models["disc"].named_parameters():
                if name.endswith("bias"):
                    p.zero_()
    loss_cfg = LossConfig(ls_prior=ls_prior, ls_gen_scale=gen_scale, pullaway=pullaway)
    step = make_step(models, opts, ctrl, cfg.latent, seed=7, loss_cfg=loss_cfg)
    step([x], step=3)
    eps, z_g = step_noise(7, 3, 4, cfg.latent, True, x.device)
    ref = naive_grads(models, x, eps.double(), z_g.double(), loss_cfg, k)
    if pullaway:  # the term moves the decoder's gradient well beyond the tolerance
        off = naive_grads(models, x, eps.double(), z_g.double(),
                          LossConfig(ls_prior=ls_prior, ls_gen_scale=gen_scale), k)
        assert max((a - b).abs().max().item()
                   for a, b in zip(ref["decoder"], off["decoder"])) > 1e-3
    for name in ("encoder", "decoder", "disc"):
        applied = opts[name].applied
        assert len(applied) == len(ref[name])
        for got, want in zip(applied, ref[name]):
            assert got is not None
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_disc_untouched_by_generator_and_encoder_losses():
    cfg, models, opts, ctrl, x = setup(0.5)
    step = make_step(models, opts, ctrl, cfg.latent, seed=1)
    step.phases = step.phases[:2]  # run only the encoder and generator phases
    step([x], step=0)
    assert all(g is None for g in opts["disc"].applied)
    assert all(g is not None for g in opts["encoder"].applied)
    assert all(g is not None for g in opts["decoder"].applied)


def test_encoder_phase_touches_only_the_encoder():
    cfg, models, opts, ctrl, x = setup(0.5)
    step = make_step(models, opts, ctrl, cfg.latent, seed=1)
    step.phases = step.phases[:1]
    step([x], step=0)
    assert all(g is None for g in opts["decoder"].applied)
    assert all(g is None for g in opts["disc"].applied)


def test_shared_forward_runs_each_module_once_per_input():
    """No needless re-runs: E sees the B real images once, Dec the B z_v and B z_g once,
    D the B real, B x_v and B x_g images once; the naive reference sees far more."""
    cfg, models, opts, ctrl, x = setup()
    seen = {n: 0 for n in models}
    for n, m in models.items():
        m.register_forward_hook(lambda _m, inp, _o, n=n: seen.__setitem__(n, seen[n] + len(inp[0])))
    b = len(x)
    make_step(models, opts, ctrl, cfg.latent, seed=1)([x], step=0)
    assert seen == {"encoder": b, "decoder": 2 * b, "disc": 3 * b}
    seen.update({n: 0 for n in seen})
    eps, z_g = step_noise(1, 0, b, cfg.latent, True, x.device)
    naive_grads(models, x, eps.double(), z_g.double(), LossConfig(), 0.0)
    assert seen == {"encoder": 3 * b, "decoder": 5 * b, "disc": 8 * b}  # what sharing saves


def test_phases_backpropagate_only_through_their_branches():
    """Which D outputs each backward reaches (tensor hooks on the outputs of D's three
    calls: 0 = D(x), 1 = D(x_g), 2 = D(x_v)): the encoder phase only z of D(x_v); the
    generator phase D(x_g) and D(x_v); the discriminator phase all three. D(x) is never
    back-propagated for L_enc or L_gen."""
    cfg, models, opts, ctrl, x = setup()
    events: list[tuple[int, str]] = []
    calls = [0]

    def on_forward(_m, _inp, out):
        i = calls[0]
        calls[0] += 1
        for name, t in zip(("z", "rec"), out):
            t.register_hook(lambda g, i=i, name=name: events.append((i, name)))

    models["disc"].register_forward_hook(on_forward)
    make_step(models, opts, ctrl, cfg.latent, seed=1)([x], step=0)
    both = [(i, o) for i in (0, 1, 2) for o in ("rec", "z")]  # z lies on the path to rec
    assert events[0] == (2, "z")
    assert sorted(events[1:5]) == both[2:]
    assert sorted(events[5:]) == both


def test_real_adam_step_moves_every_module():
    cfg, models, _, ctrl, x = setup()
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    before = {n: [p.clone() for p in m.parameters()] for n, m in models.items()}
    stats = make_step(models, opts, ctrl, cfg.latent, seed=1)([x], step=0).host()
    for n, m in models.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[n], m.parameters())), n
    assert stats["k_prev"] == 0.3 and stats["k"] == float(ctrl.k)
