"""Tests for rapids_geovq.models.bounds: ELBO, posterior-mean row and IWAE against exact log p(x).

A VAE with a one- or two-dimensional latent and six pixels is small enough to integrate
``p(x) = int p(x|z) p(z) dz`` on a dense grid in float64, so the bounds are checked
against the true marginal likelihood, not against each other only.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate

from rapids_geovq.models import (
    VAE,
    VAEConfig,
    evaluate_vae,
    iwae_bound,
    mean_and_se,
    negative_elbo,
    posterior_mean_loss,
)

X_TOY = np.array([[1, 0, 1, 0, 1, 0],
                  [0, 0, 0, 1, 1, 1],
                  [1, 1, 1, 1, 1, 1],
                  [0.2, 0.9, 0.5, 0.1, 0.7, 0.3]], dtype=np.float32)


# Weight scales (decoder hidden, decoder output, encoder mean) and the posterior log-variance
# bias per latent size: p(x|z) varies strongly with z and q(z|x) is off the true posterior,
# so the ELBO sits well below log p(x) and the orderings are tested with room to fail, while
# the posterior stays close enough for IWAE with k = 1000 to come within hundredths of a nat.
TOY_SCALES = {1: (3.0, 4.0, 3.0, -1.0), 2: (2.0, 2.0, 2.0, -0.5)}


def toy_vae(latent_dim: int, seed: int = 0) -> VAE:
    """Random six-pixel VAE with the weights rescaled by ``TOY_SCALES``."""
    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_dim=X_TOY.shape[1], hidden_dim=8, latent_dim=latent_dim))
    dec_hidden, dec_out, enc_mu, logvar_bias = TOY_SCALES[latent_dim]
    with torch.no_grad():
        model.dec_hidden.weight.mul_(dec_hidden)
        model.dec_out.weight.mul_(dec_out)
        model.enc_mu.weight.mul_(enc_mu)
        model.enc_logvar.bias.fill_(logvar_bias)
    return model.eval()


def _log_integrand(model64: VAE, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) for grid points z (G, d), one image x (D,), float64."""
    probs = model64.decode(z)
    bce = F.binary_cross_entropy(probs, x.expand_as(probs), reduction="none").sum(1)
    return -bce - 0.5 * z.pow(2).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


def exact_log_px(model: VAE, x: np.ndarray) -> np.ndarray:
    """log p(x) by a Riemann sum on [-12, 12]^d (step 5e-4 in 1-D, 0.02 in 2-D), float64."""
    d = model.config.latent_dim
    model64 = VAE(model.config).double()
    model64.load_state_dict(model.state_dict())
    if d == 1:
        axis = torch.linspace(-12, 12, 48001, dtype=torch.float64)
        z = axis[:, None]
    else:
        axis = torch.linspace(-12, 12, 1201, dtype=torch.float64)
        z = torch.cartesian_prod(axis, axis)
    log_cell = d * math.log(float(axis[1] - axis[0]))
    with torch.no_grad():
        return np.array([float(torch.logsumexp(_log_integrand(model64, z, xi), 0)) + log_cell
                         for xi in torch.as_tensor(x, dtype=torch.float64)])


def test_quadrature_matches_scipy_quad() -> None:
    """The grid sum used as ground truth agrees with adaptive quadrature."""
    model = toy_vae(1)
    model64 = VAE(model.config).double()
    model64.load_state_dict(model.state_dict())
    x = torch.as_tensor(X_TOY[0], dtype=torch.float64)

    def f(z: float) -> float:
        with torch.no_grad():
            return math.exp(float(_log_integrand(model64, torch.tensor([[z]], dtype=torch.float64), x)))

    value, _ = integrate.quad(f, -12, 12, limit=400, points=[-2, -1, 0, 1, 2])
    assert exact_log_px(model, X_TOY[:1])[0] == pytest.approx(math.log(value), abs=1e-6)


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_elbo_le_iwae_le_log_px_and_iwae_converges(latent_dim: int) -> None:
    """-ELBO >= -IWAE_k (falling in k) >= -log p(x), and IWAE_1000 reaches -log p(x)."""
    model = toy_vae(latent_dim)
    n_img = len(X_TOY)
    neg_log_px = -exact_log_px(model, X_TOY)
    reps = 200  # each image repeated: averaging over repeats estimates the bounds' expectations
    xr = np.repeat(X_TOY, reps, axis=0)

    elbo = negative_elbo(model, xr, n_samples=100, seed=1).per_image.reshape(n_img, reps)
    elbo_mean = elbo.mean(1)
    elbo_se = elbo.std(1, ddof=1) / math.sqrt(reps)
    means, ses = {}, {}
    for k in (1, 10, 100, 1000):
        v = iwae_bound(model, xr, k=k, seed=2).per_image.reshape(n_img, reps)
        means[k], ses[k] = v.mean(1), v.std(1, ddof=1) / math.sqrt(reps)

    # The setup must leave a real gap for the orderings to mean anything.
    assert (elbo_mean - neg_log_px > 0.1).all() and (elbo_mean - neg_log_px).max() > 1.0
    assert (elbo_mean >= neg_log_px).all()
    ks = sorted(means)
    for a, b in zip(ks, ks[1:]):
        tol = 4 * np.sqrt(ses[a] ** 2 + ses[b] ** 2)
        assert (means[a] >= means[b] - tol).all(), (a, b, means[a], means[b])
    assert (elbo_mean >= means[1000] - 4 * elbo_se).all()
    assert (means[1000] >= neg_log_px - 4 * ses[1000]).all()
    # Gap to -log p(x): nats for k = 1, hundredths for k = 1000.
    gaps = {k: means[k] - neg_log_px for k in ks}
    assert (gaps[1] > 0.1).all()
    assert (gaps[1000] < 0.05).all(), gaps[1000]
    assert (np.abs(gaps[1000]) < np.abs(gaps[10])).all()


def test_iwae_k1_is_a_single_sample_elbo() -> None:
    """With k = 1 the IWAE is log p(x|z) + log p(z) - log q(z|x) of one draw: the ELBO with a
    Monte-Carlo KL. The same seed draws the same z, so only the KL estimate differs, and it is
    unbiased: the means agree within their standard error."""
    model = toy_vae(1)
    xr = np.repeat(X_TOY[:2], 20000, axis=0)
    iw = iwae_bound(model, xr, k=1, seed=5)
    el = negative_elbo(model, xr, n_samples=1, seed=5)
    diff = iw.per_image - el.per_image
    for half in (slice(0, 20000), slice(20000, 40000)):
        mean, se = mean_and_se(diff[half])
        assert se > 0 and abs(mean) < 4 * se
    # Nowhere near each other in general per image (MC KL vs analytic KL) ...
    assert np.abs(diff).max() > 0.1
    # ... and an independent draw changes the values, so the shared-noise comparison is real.
    other = iwae_bound(model, xr[:100], k=1, seed=6).per_image
    assert not np.allclose(other, iw.per_image[:100])


def test_iwae_constant_weights_exact_for_any_chunking() -> None:
    """q = p and a decoder that ignores z make every weight p(x|z): IWAE = BCE exactly, the
    effective sample size is k, whether samples are split across chunks or not."""
    model = toy_vae(2)
    with torch.no_grad():
        for layer in (model.enc_mu, model.enc_logvar):
            layer.weight.zero_()
            layer.bias.zero_()
        model.dec_hidden.weight.zero_()
    x = X_TOY
    probs = model.decode(torch.zeros(1, 2)).detach().expand(len(x), -1)
    bce = F.binary_cross_entropy(probs.double(), torch.from_numpy(x).double(), reduction="none").sum(1)
    for k, chunk in ((1, 8), (37, 1000), (37, 5), (37, 1)):
        r = iwae_bound(model, x, k=k, seed=0, chunk_rows=chunk)
        np.testing.assert_allclose(r.per_image, bce.numpy(), rtol=1e-6)
        np.testing.assert_allclose(r.terms["ess"], k, rtol=1e-9)


def test_negative_elbo_terms_and_spread() -> None:
    model = toy_vae(2)
    one = negative_elbo(model, X_TOY, n_samples=1, seed=0)
    many = negative_elbo(model, X_TOY, n_samples=50, seed=0, chunk_rows=7)
    for r, s in ((one, 1), (many, 50)):
        assert r.label == "neg_elbo" and r.n_samples == s and r.n == len(X_TOY)
        assert r.per_image.dtype == np.float64 and r.per_image.shape == (len(X_TOY),)
        np.testing.assert_allclose(r.per_image, r.terms["bce"] + r.terms["kl"])
        assert r.seconds >= 0
    assert np.isnan(one.terms["mc_sd"]).all()
    assert (many.terms["mc_sd"] > 0).all()
    np.testing.assert_allclose(one.terms["kl"], many.terms["kl"])
    # Analytic KL of a diagonal Gaussian against N(0, I), by hand.
    with torch.no_grad():
        mu, logvar = (t.double().numpy() for t in model.encode(torch.from_numpy(X_TOY)))
    kl_hand = 0.5 * (mu**2 + np.exp(logvar) - 1 - logvar).sum(1)
    np.testing.assert_allclose(one.terms["kl"], kl_hand, rtol=1e-6)
    summary = many.summary()
    assert summary["mean"] == pytest.approx(many.per_image.mean())
    assert summary["sum"] == pytest.approx(many.per_image.sum())
    assert summary["bce_mean"] == pytest.approx(many.terms["bce"].mean())
    assert summary["mc_sd_mean"] > 0 and "mc_sd_mean" not in one.summary()


def test_negative_elbo_by_hand() -> None:
    """All 4 x 50 draws fit one chunk, drawn as one (4, 50, d) block from the seeded
    generator: recompute the per-draw BCE, its mean and spread directly."""
    model = toy_vae(2)
    r = negative_elbo(model, X_TOY, n_samples=50, seed=3)
    eps = torch.randn((4, 50, 2), generator=torch.Generator().manual_seed(3))
    x = torch.from_numpy(X_TOY)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps
        probs = model.decode(z)
    draws = F.binary_cross_entropy(probs.double(), x[:, None, :].expand_as(probs).double(),
                                   reduction="none").sum(-1).numpy()
    np.testing.assert_allclose(r.terms["bce"], draws.mean(1), rtol=1e-5)
    np.testing.assert_allclose(r.terms["mc_sd"], draws.std(1, ddof=1), rtol=1e-4)
    np.testing.assert_allclose(r.per_image, draws.mean(1) + r.terms["kl"], rtol=1e-5)


def test_seeded_and_independent_of_global_rng() -> None:
    model = toy_vae(2)
    torch.manual_seed(123)
    a = negative_elbo(model, X_TOY, n_samples=3, seed=7).per_image
    b_iw = iwae_bound(model, X_TOY, k=20, seed=7).per_image
    torch.manual_seed(999)
    torch.rand(1000)
    np.testing.assert_array_equal(a, negative_elbo(model, X_TOY, n_samples=3, seed=7).per_image)
    np.testing.assert_array_equal(b_iw, iwae_bound(model, X_TOY, k=20, seed=7).per_image)
    assert not np.array_equal(a, negative_elbo(model, X_TOY, n_samples=3, seed=8).per_image)


def test_posterior_mean_loss_matches_evaluate_vae() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 784)).astype(np.float32)
    torch.manual_seed(0)
    model = VAE(VAEConfig(hidden_dim=32, latent_dim=3)).eval()
    r = posterior_mean_loss(model, x, batch_size=16)
    ev = evaluate_vae(model, x, batch_size=16)
    assert r.label == "posterior_mean" and r.n_samples == 0
    assert r.terms["bce"].sum() == pytest.approx(ev["bce"], rel=1e-5)
    assert r.terms["kl"].sum() == pytest.approx(ev["kl"], rel=1e-5)
    assert r.total == pytest.approx(ev["total"], rel=1e-5)


def test_mean_and_se() -> None:
    mean, se = mean_and_se(np.array([1.0, 2.0, 3.0, 6.0]))
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt(14.0 / 3.0) / 2.0)
    assert math.isnan(mean_and_se(np.array([4.0]))[1])
    assert all(math.isnan(v) for v in mean_and_se(np.array([])))


def test_bad_settings_are_rejected() -> None:
    model = toy_vae(1)
    with pytest.raises(ValueError, match="n_samples"):
        negative_elbo(model, X_TOY, n_samples=0)
    with pytest.raises(ValueError, match="k must be"):
        iwae_bound(model, X_TOY, k=0)
    with pytest.raises(ValueError, match="chunk_rows"):
        iwae_bound(model, X_TOY, k=5, chunk_rows=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        negative_elbo(model, X_TOY * 2)
