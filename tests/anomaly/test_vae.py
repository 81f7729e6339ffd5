"""VAE: KL and reparameterization against closed forms, error map by a slow loop, ELBO-gradient map by
finite differences, a training step, eval determinism and traceability, config errors."""

import math

import numpy as np
import pytest
import torch

from fovea.anomaly.models import build_model
from fovea.anomaly.vae import VAE, VAEConfig, gaussian_kl, pixel_error_map, reparameterize
from fovea.errors import ConfigError, DataError


def test_kl_matches_closed_form_per_dimension_and_numeric_integral():
    mu = torch.tensor([[0.5, -1.0, 0.0]])
    logvar = torch.tensor([[math.log(0.25), 0.0, math.log(4.0)]])
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2) / 2 - 1/2, per dimension
    ref = sum(math.log(1 / s) + (s * s + m * m) / 2 - 0.5 for m, s in [(0.5, 0.5), (-1.0, 1.0), (0.0, 2.0)])
    assert float(gaussian_kl(mu, logvar)[0]) == pytest.approx(ref, rel=1e-6)
    # one dimension against a numerical integral of q log(q / p)
    m, s = 0.7, 0.6
    z = np.linspace(-8, 8, 200001)
    q = np.exp(-0.5 * ((z - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    p = np.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    numeric = np.trapezoid(q * np.log(q / p), z)
    got = float(gaussian_kl(torch.tensor([[m]]), torch.tensor([[2 * math.log(s)]]))[0])
    assert got == pytest.approx(numeric, rel=1e-5)
    assert float(gaussian_kl(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)).abs().max()) == 0.0


def test_reparameterization_value_and_gradients():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(9.0)], requires_grad=True)
    eps = torch.tensor([0.5, -1.0])
    z = reparameterize(mu, logvar, eps)
    torch.testing.assert_close(z.detach(), torch.tensor([1.5, -5.0]))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(2))
    # dz/dlogvar = eps * exp(logvar / 2) / 2
    torch.testing.assert_close(logvar.grad, torch.tensor([0.25, -1.5]))
    torch.manual_seed(0)
    samples = reparameterize(torch.full((20000,), 3.0), torch.full((20000,), math.log(4.0)))
    assert float(samples.mean()) == pytest.approx(3.0, abs=0.05)
    assert float(samples.std()) == pytest.approx(2.0, abs=0.05)


def test_pixel_error_map_slow_loop():
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    m = pixel_error_map(x, r)
    assert m.shape == (2, 1, 4, 5)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                ref = sum((float(x[b, c, i, j]) - float(r[b, c, i, j])) ** 2 for c in range(3))
                assert float(m[b, 0, i, j]) == pytest.approx(ref, rel=1e-5)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE(VAEConfig(width=8, n_down=2, latent_channels=4, score_sigma=1.0))


def test_eval_is_deterministic_and_maps_equal_the_reconstruction_error(vae):
    vae.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        s1, m1 = vae(x)
        s2, m2 = vae(x)
        mu, _ = vae.encode(x)
        recon = vae.decoder(mu)  # eval reconstructs from the posterior mean
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(m1, ((x - recon) ** 2).sum(1, keepdim=True))
    assert s1.shape == (2,) and m1.shape == (2, 1, 16, 16)


def test_loss_terms_are_mse_plus_beta_kl(vae):
    vae.train()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(5)
    t = vae.loss_terms(x)
    torch.manual_seed(5)  # the same eps: recompute by hand
    mu, logvar = vae.encode(x)
    recon = vae.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
    mse = float(((recon - x) ** 2).mean())
    kl = float(gaussian_kl(mu, logvar).mean()) / (3 * 16 * 16)
    assert float(t["mse"]) == pytest.approx(mse, rel=1e-5)
    assert float(t["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(t["loss"]) == pytest.approx(mse + vae.config.beta * kl, rel=1e-5)


def test_elbo_gradient_map_matches_finite_differences():
    torch.manual_seed(0)
    model = VAE(VAEConfig(width=8, n_down=2, latent_channels=4, map_mode="elbo_grad", score_sigma=1.0)).double().eval()
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    _, maps = model(x)

    def neg_elbo(xx):
        with torch.no_grad():
            mu, logvar = model.encode(xx)
            return float(((model.decoder(mu) - xx) ** 2).sum() + model.config.beta * gaussian_kl(mu, logvar).sum())

    h = 1e-6
    for (i, j) in [(0, 0), (3, 5), (7, 2)]:
        grad = []
        for c in range(3):
            xp, xm = x.clone(), x.clone()
            xp[0, c, i, j] += h
            xm[0, c, i, j] -= h
            grad.append((neg_elbo(xp) - neg_elbo(xm)) / (2 * h))
        assert float(maps[0, 0, i, j]) == pytest.approx(sum(abs(g) for g in grad), rel=1e-4)
    with pytest.raises(ConfigError, match="cannot be exported"):
        torch.jit.trace(model, x, check_trace=False)


def test_training_lowers_the_loss_and_fit_uses_the_engine(tmp_path):
    torch.manual_seed(0)
    m = build_model("vae", width=8, n_down=2, latent_channels=4, epochs=4, batch_size=4, lr=5e-3,
                    out_dir=str(tmp_path), backbone="ignored", weights="random", seed=0)
    x = torch.randn(4, 3, 16, 16) * 0.3 + torch.linspace(-1, 1, 16)[None, None, None, :]
    m.fit([x[:2], {"image": x[2:]}])
    assert len(m.history) == 4 and all(np.isfinite(h["train_loss"]) for h in m.history)
    assert m.history[-1]["train_loss"] < m.history[0]["train_loss"]
    assert not m.training
    with pytest.raises(DataError, match="no training images"):
        m.fit([])


def test_eval_forward_traces_and_matches(vae):
    vae.eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        traced = torch.jit.trace(vae, x, check_trace=False)
        ref, got = vae(x), traced(x)
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], ref[1])


def test_config_and_input_errors(vae):
    with pytest.raises(ConfigError, match="map_mode"):
        VAEConfig(map_mode="max")
    with pytest.raises(ConfigError, match="beta"):
        VAEConfig(beta=-1)
    with pytest.raises(ConfigError, match="divisible by 2\\^n_down = 4"):
        vae(torch.randn(1, 3, 18, 16))
    with pytest.raises(ConfigError, match="has no option"):
        build_model("vae", coreset_ratio=0.1)
