"""The PCA baseline and the shared metrics (PSNR, bits/dim)."""

import math

import numpy as np
import pytest
import torch

from faceedit.cache import Cache
from faceedit.metrics import bits_per_dim, psnr, reconstruction_psnr
from faceedit.pca import PCA, PCAConfig, fit_pca
from test_trainer import make_cache


def test_psnr_and_bits_per_dim_by_hand():
    x = torch.zeros(2, 3, 4, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1, 0, 0, 0] = 1.0  # MSE 1/48
    assert psnr(y, x).tolist() == pytest.approx([20.0, 10 * math.log10(48)], rel=1e-5)
    # a uniform density on [0, 1]^D has nll 0 nats -> exactly 8 bits per dimension
    assert bits_per_dim(torch.zeros(1), 48).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor([48 * math.log(2)]), 48).item() == pytest.approx(9.0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return Cache.open(make_cache(tmp_path_factory.mktemp("pca"), n=80, size=8, val=16))


def test_pca_has_the_vae_interface_and_reconstructs_exactly_at_full_rank(cache):
    pca = fit_pca(cache, latent_dim=5)
    x = torch.rand(3, 3, 8, 8)
    mu, logvar = pca.encode(x)
    assert mu.shape == logvar.shape == (3, 5)
    assert pca.decode(mu).shape == (3, 3, 8, 8) and pca.sample(4).shape == (4, 3, 8, 8)
    # codes of the train images are whitened: mean ~0, variance ~1 per component
    train = torch.from_numpy(cache.images[cache.indices("train")]).float() / 255
    codes = pca.encode(train)[0]
    assert codes.mean(0).abs().max() < 1e-3 and codes.var(0).sub(1).abs().max() < 1e-2
    # more components, better reconstructions; all 63 (N-1) of them reproduce the train set
    psnrs = [reconstruction_psnr(fit_pca(cache, d), cache, "val") for d in (2, 8, 32)]
    assert psnrs[0] < psnrs[1] < psnrs[2]
    full = fit_pca(cache, latent_dim=63)
    assert psnr(full.reconstruct(train), train).min() > 40


def test_pca_rejects_bad_shapes(cache):
    pca = PCA(PCAConfig(image_size=8, latent_dim=5))
    with pytest.raises(ValueError, match=r"expected \(B, 3, 8, 8\)"):
        pca.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="need more than D=100"):
        fit_pca(cache, latent_dim=100)
