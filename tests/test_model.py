"""The VAE and its loss: shapes, the closed-form KL, the loss against a hand computation, gradients."""

import math

import pytest
import torch

from faceedit.model import VAE, VAEConfig, VAEOutput, gaussian_nll, kl_divergence, vae_loss

TINY = dict(channels=(8, 16), groups=4, latent_dim=6)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("blocks,norm", [(0, "none"), (1, "group")])
def test_shapes(size, blocks, norm):
    cfg = VAEConfig(image_size=size, blocks=blocks, norm=norm, **TINY)
    model = VAE(cfg).eval()
    x = torch.rand(3, 3, size, size)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 6)
    out = model(x)
    assert out.recon.shape == x.shape
    assert model.reconstruct(x).shape == x.shape
    s = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 3, size, size) and s.min() >= 0 and s.max() <= 1


def test_default_config_shapes_and_no_hidden_sizes():
    for cfg in (VAEConfig(), VAEConfig(image_size=128, latent_dim=32, channels=(8, 16, 32))):
        model = VAE(cfg)
        z = torch.zeros(2, cfg.latent_dim)
        assert model.decode(z).shape == (2, 3, cfg.image_size, cfg.image_size)
        assert model.encode(torch.rand(2, 3, cfg.image_size, cfg.image_size))[0].shape == (2, cfg.latent_dim)


def test_bad_config_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="image_size=60"):
        VAEConfig(image_size=60)
    with pytest.raises(ValueError, match="groups"):
        VAEConfig(channels=(6, 12), norm="group", groups=4)
    model = VAE(VAEConfig(image_size=32, **TINY))
    with pytest.raises(ValueError, match=r"expected \(B, 3, 32, 32\)"):
        model.encode(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected \(B, 6\)"):
        model.decode(torch.rand(2, 7))


def test_kl_nonnegative_and_zero_only_at_the_prior():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        mu = torch.randn(4, 8, generator=g) * torch.rand(1, generator=g) * 3
        logvar = torch.randn(4, 8, generator=g) * torch.rand(1, generator=g) * 3
        kl = kl_divergence(mu, logvar)
        assert kl.shape == (4,) and (kl >= 0).all()
        assert (kl > 0).all()  # random (mu, logvar) are never exactly the prior
    assert torch.equal(kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)), torch.zeros(3))


def test_kl_matches_the_formula_by_hand():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, -1.0]])
    by_hand = 0.5 * sum(m * m + math.exp(lv) - lv - 1 for m, lv in zip([1.0, -2.0], [0.5, -1.0]))
    assert kl_divergence(mu, logvar).item() == pytest.approx(by_hand, rel=1e-6)


def _fixed_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 4, 4, generator=g)
    recon = torch.rand(2, 3, 4, 4, generator=g)
    mu, logvar = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    return x, VAEOutput(recon, mu, logvar)


def _kl_by_hand(mu, logvar):
    return sum(0.5 * sum(m * m + math.exp(lv) - lv - 1 for m, lv in zip(mr, lr))
               for mr, lr in zip(mu.tolist(), logvar.tolist())) / len(mu)


def test_fixed_decoder_loss_equals_hand_computation():
    x, out = _fixed_batch()
    cfg = VAEConfig(image_size=4, channels=(4,), groups=1, latent_dim=3, decoder="fixed", beta=2.5)
    loss = vae_loss(x, out, cfg)
    rec = sum(0.5 * sum((a - b) ** 2 for a, b in zip(xi.flatten().tolist(), ri.flatten().tolist()))
              for xi, ri in zip(x, out.recon)) / 2
    kl = _kl_by_hand(out.mu, out.logvar)
    assert loss.reconstruction.item() == pytest.approx(rec, rel=1e-5)
    assert loss.kl.item() == pytest.approx(kl, rel=1e-5)
    assert loss.total.item() == pytest.approx(rec + 2.5 * kl, rel=1e-5)


def test_sigma_decoder_loss_equals_hand_computation():
    x, out = _fixed_batch()
    cfg = VAEConfig(image_size=4, channels=(4,), groups=1, latent_dim=3, decoder="sigma")
    loss = vae_loss(x, out, cfg)
    d = (x - out.recon).flatten().tolist()
    mse = sum(v * v for v in d) / len(d)
    P = 3 * 4 * 4
    # with s^2 = MSE the Gaussian NLL of each image is sq/(2 MSE) + P ln s + P/2 ln(2 pi)
    nll = [0.5 * sum(v * v for v in (x[i] - out.recon[i]).flatten().tolist()) / mse
           + P * 0.5 * math.log(mse) + P * 0.5 * math.log(2 * math.pi) for i in range(2)]
    assert loss.log_sigma.item() == pytest.approx(0.5 * math.log(mse), rel=1e-5)
    assert loss.reconstruction.item() == pytest.approx(sum(nll) / 2, rel=1e-5)
    assert loss.total.item() == pytest.approx(sum(nll) / 2 + _kl_by_hand(out.mu, out.logvar), rel=1e-5)


def test_optimal_sigma_minimizes_the_gaussian_nll():
    x, out = _fixed_batch()
    cfg = VAEConfig(image_size=4, channels=(4,), groups=1, latent_dim=3)
    best = vae_loss(x, out, cfg).log_sigma
    at = lambda ls: gaussian_nll(x, out.recon, torch.tensor(ls)).mean().item()
    assert at(best.item()) < at(best.item() + 0.05) and at(best.item()) < at(best.item() - 0.05)


def test_gradients_reach_the_encoder_through_z():
    torch.manual_seed(0)
    cfg = VAEConfig(image_size=32, **TINY)
    model = VAE(cfg)
    x = torch.rand(4, 3, 32, 32)
    mu, logvar = model.encode(x)
    z = model.reparameterize(mu, logvar)
    recon = model.decode(z)
    # only the reconstruction term: its gradient reaches mu and logvar through z alone
    (recon - x).pow(2).sum().backward()
    head = model.encoder.head.weight.grad
    assert head is not None and head.abs().sum() > 0
    D = cfg.latent_dim
    assert head[:D].abs().sum() > 0 and head[D:].abs().sum() > 0  # rows of mu and of logvar


def test_reparameterize_is_seeded_and_differentiable():
    mu = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    a = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(3))
    b = VAE.reparameterize(mu, logvar, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    a.sum().backward()
    assert torch.equal(mu.grad, torch.ones(2, 3))


def test_unfitted_prior_is_the_standard_normal():
    model = VAE(VAEConfig(image_size=32, **TINY))
    z = model.sample_latents(5, torch.Generator().manual_seed(3))
    assert torch.equal(z, torch.randn(5, 6, generator=torch.Generator().manual_seed(3)))


def test_fit_prior_matches_the_aggregate_posterior_moments():
    """Codes drawn from the fitted prior have the mixture's mean and covariance: cov(mu) plus the
    mean posterior variance on the diagonal (here mu ~ N(m, A A^T), sigma^2 = 0.25)."""
    g = torch.Generator().manual_seed(0)
    model = VAE(VAEConfig(image_size=32, **TINY))
    m, A = torch.arange(6.0) - 2, torch.randn(6, 6, generator=g)
    mu = m + torch.randn(20_000, 6, generator=g) @ A.T
    model.fit_prior(mu, torch.full_like(mu, math.log(0.25)))
    z = model.sample_latents(40_000, g).double()
    want = (A @ A.T + 0.25 * torch.eye(6)).double()
    assert torch.allclose(z.mean(0), m.double(), atol=0.1)
    assert torch.allclose(torch.cov(z.T), want, atol=0.05 * want.abs().max())
    standard = model.sample_latents(40_000, g, standard=True)
    assert torch.allclose(torch.cov(standard.T), torch.eye(6), atol=0.05)
    assert model.sample(3, g).shape == (3, 3, 32, 32)


def test_fit_prior_rejects_bad_shapes():
    model = VAE(VAEConfig(image_size=32, **TINY))
    with pytest.raises(ValueError, match=r"expected two \(N, 6\) with N > 6"):
        model.fit_prior(torch.zeros(4, 6), torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"expected two \(N, 6\)"):
        model.fit_prior(torch.zeros(50, 5), torch.zeros(50, 5))
