"""Architecture: stages, shapes and parameter counts per resolution (README table)."""

import pytest
import torch

from vaegan_dist.config import ModelConfig
from vaegan_dist.models import Decoder, Encoder, build_models, count_params, num_stages


@pytest.mark.parametrize("res,stages", [(32, 3), (64, 4), (128, 5), (256, 6), (512, 7)])
def test_stage_count(res, stages):
    assert num_stages(res) == stages
    enc = Encoder(res, 2, 3)
    dec = Decoder(res, 2, 3)
    assert len(enc.stages) == stages and len(enc.downs) == stages - 1
    assert len(dec.stages) == stages
    # encoder's last stage has stages*n filters at 8x8
    assert enc.fc.in_features == 8 * 8 * stages * 2


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes(res):
    cfg = ModelConfig(resolution=res, n=4, latent=6, d_latent=5)
    m = build_models(cfg)
    x = torch.randn(2, 3, res, res)
    mu, logvar = m["encoder"](x)
    assert mu.shape == (2, 6) and logvar.shape == (2, 6)
    assert m["decoder"](mu).shape == x.shape
    z, rec = m["disc"](x)
    assert z.shape == (2, 5) and rec.shape == x.shape


def test_tanh_output_bounds_the_reconstruction_and_keeps_the_parameters():
    """model.d_output/g_output=tanh: the same weights give tanh of the linear output, so D's
    reconstruction (hence L_g = |x_g - D(x_g)| <= |x_g| + 1) stays bounded however far the
    linear output runs; 'linear' (the paper's) is unbounded."""
    torch.manual_seed(0)
    lin = build_models(ModelConfig(resolution=32, n=4, latent=6, d_latent=5))
    bounded = build_models(ModelConfig(resolution=32, n=4, latent=6, d_latent=5,
                                       d_output="tanh", g_output="tanh"))
    for name in lin:
        bounded[name].load_state_dict(lin[name].state_dict())  # no new parameters
    with torch.no_grad():
        for m in (lin, bounded):
            m["disc"].dec.out.weight.mul_(1e3)  # a D that pushes its outputs far out
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 6)
    _, rec_lin = lin["disc"](x)
    _, rec_tanh = bounded["disc"](x)
    assert rec_lin.abs().max() > 10
    assert rec_tanh.abs().max() <= 1
    torch.testing.assert_close(rec_tanh, torch.tanh(rec_lin))
    torch.testing.assert_close(bounded["decoder"](z), torch.tanh(lin["decoder"](z)))


def test_minibatch_std_feature_is_the_group_spread_and_sees_collapse():
    """model.d_mbstd=G: the extra map of each sample is the std over its group of G
    consecutive samples, averaged over channels and positions (computed here with numpy);
    a batch of identical images gives 0, so D can tell a collapsed fake batch from reals."""
    import numpy as np

    from vaegan_dist.models import minibatch_std

    torch.manual_seed(0)
    x = torch.randn(8, 5, 4, 4)
    out = minibatch_std(x, 4)
    assert out.shape == (8, 6, 4, 4)
    torch.testing.assert_close(out[:, :5], x)
    a = x.numpy().reshape(2, 4, 5, 4, 4)
    want = np.sqrt(a.var(axis=1) + 1e-8).mean(axis=(1, 2, 3))
    for i in range(8):
        assert np.allclose(out[i, 5].numpy(), want[i // 4], atol=1e-6)
    assert minibatch_std(x[:1].expand(8, -1, -1, -1), 4)[:, 5].max() < 1e-3
    assert minibatch_std(x[:6], 4).shape == (6, 6, 4, 4)  # not divisible: one group
    d = build_models(ModelConfig(resolution=32, n=4, latent=6, d_latent=5, d_mbstd=4))["disc"]
    z, rec = d(torch.randn(8, 3, 32, 32))
    assert z.shape == (8, 5) and rec.shape == (8, 3, 32, 32)
    assert d.enc.fc.in_features == 8 * 8 * (3 * 4 + 1)


def _expected_disc_params(res: int, n: int, h: int, c: int = 3) -> int:
    """Closed form of the discriminator's size, written independently of the module code."""
    s = num_stages(res)
    conv = lambda cin, cout: 9 * cin * cout + cout  # noqa: E731
    enc = conv(c, n)
    cin = n
    for i in range(1, s + 1):
        enc += conv(cin, i * n) + conv(i * n, i * n)
        cin = i * n
        if i < s:
            enc += conv(cin, cin)  # stride-2 sub-sampling, same filters
    enc += 64 * cin * h + h
    dec = h * 64 * n + 64 * n + s * 2 * conv(n, n) + conv(n, c)
    return enc + dec


@pytest.mark.parametrize("res,n,h", [(64, 64, 64), (128, 128, 64), (32, 16, 16)])
def test_param_counts(res, n, h):
    cfg = ModelConfig(resolution=res, n=n, latent=h, d_latent=h)
    m = build_models(cfg)
    assert count_params(m["disc"]) == _expected_disc_params(res, n, h)


def test_disc_close_to_began_size_at_128():
    # BEGAN's widely used TensorFlow implementation (carpedm20/BEGAN-tensorflow) at
    # 128x128, n=128, h=64 has 23,221,443 discriminator parameters (counted from its layer
    # list: conv 3->n; per stage two convs to s*n and a stride-2 conv; fc 8*8*5n -> 64; the
    # decoder fc 64 -> 8*8*n, five stages of two n->n convs, conv n->3).
    m = build_models(ModelConfig(resolution=128, n=128, latent=64, d_latent=64))
    assert abs(count_params(m["disc"]) - 23_221_443) / 23_221_443 < 0.01


def test_no_batchnorm_dropout_or_transposed_convs():
    m = build_models(ModelConfig(resolution=64, n=4, latent=4, d_latent=4))
    bad = (torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.ConvTranspose2d)
    for module in m.values():
        assert not any(isinstance(x, bad) for x in module.modules())
