"""A linear baseline with the VAE's interface: PCA of flattened pixels with D components, read as
probabilistic PCA (Tipping & Bishop 1999) so that encode returns (mu, logvar) like the VAE's.

Codes are whitened (mu_j = component_j . (x - mean) / sqrt(lambda_j)), so the prior is N(0, I) as
for the VAE and `sample` draws faces the same way; logvar is the PPCA posterior variance in those
units, ln(s^2 / lambda_j), s^2 the mean variance of the discarded directions (the same for every x).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from faceedit.cache import Cache, to_float
from faceedit.model import MAX_PARAMETERS, MAX_SIDE


@dataclass(frozen=True)
class PCAConfig:
    image_size: int = field(default=64, metadata={"help": "side S of the images"})
    latent_dim: int = field(default=128, metadata={"help": "number of components D"})

    def __post_init__(self) -> None:
        for name, value in (("image_size", self.image_size), ("latent_dim", self.latent_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"PCAConfig.{name}={value!r}: expected a whole number")
        if self.image_size > MAX_SIDE or self.latent_dim * 3 * self.image_size**2 > MAX_PARAMETERS:
            raise ValueError(f"PCAConfig: image_size={self.image_size}, latent_dim={self.latent_dim}: "
                             f"expected S <= {MAX_SIDE} and D*3*S*S <= {MAX_PARAMETERS:.0e} (the components' size)")
        if self.image_size < 1 or not 1 <= self.latent_dim <= 3 * self.image_size**2:
            raise ValueError(f"PCAConfig: image_size={self.image_size}, latent_dim={self.latent_dim}: "
                             f"expected S >= 1 and 1 <= D <= 3*S*S")


class PCA(nn.Module):
    def __init__(self, config: PCAConfig = PCAConfig()):
        super().__init__()
        self.config = config
        P, D = 3 * config.image_size**2, config.latent_dim
        self.register_buffer("mean", torch.zeros(P))  # (P,) pixel means
        self.register_buffer("components", torch.zeros(D, P))  # (D, P) orthonormal rows
        self.register_buffer("scale", torch.ones(D))  # (D,) sqrt of the eigenvalues
        self.register_buffer("logvar", torch.zeros(D))  # (D,) PPCA posterior ln variance (whitened)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [0, 1] -> mu (B, D), logvar (B, D)."""
        S = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise ValueError(f"PCA.encode: got images of shape {tuple(x.shape)}, expected (B, 3, {S}, {S})")
        mu = (x.flatten(1).float() - self.mean) @ self.components.T / self.scale  # (B, P) -> (B, D)
        return mu, self.logvar.expand_as(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, S, S), clamped to [0, 1]."""
        D, S = self.config.latent_dim, self.config.image_size
        if z.dim() != 2 or z.shape[1] != D:
            raise ValueError(f"PCA.decode: got codes of shape {tuple(z.shape)}, expected (B, {D})")
        x = self.mean + (z * self.scale) @ self.components  # (B, D) -> (B, P)
        return x.clamp(0, 1).view(-1, 3, S, S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               standard: bool = False) -> torch.Tensor:
        return self.decode(self.sample_latents(n, generator, temperature, standard))

    def sample_latents(self, n: int, generator: torch.Generator | None = None,
                       temperature: float = 1.0, standard: bool = False) -> torch.Tensor:
        """z ~ N(0, t^2 I): the PCA codes are whitened, so the standard prior is already fitted."""
        return temperature * torch.randn(n, self.config.latent_dim, generator=generator, device=self.mean.device)


@torch.no_grad()
def fit_pca(cache: Cache, latent_dim: int = 128, split: str = "train", seed: int = 0,
            chunk: int = 2048) -> PCA:
    """PCA of the flattened pixels of a cache split, by randomized SVD (Halko et al. 2011,
    torch.svd_lowrank with 4 power iterations) of the centred (N, P) matrix."""
    rows = cache.indices(split)
    N, S = len(rows), cache.size
    if N <= latent_dim:
        raise ValueError(f"fit_pca: the {split} split has {N} images, need more than D={latent_dim}")
    X = torch.empty(N, 3 * S * S)  # (N, P) float32
    for i in range(0, N, chunk):
        X[i: i + chunk] = to_float(cache.images[rows[i: i + chunk]]).flatten(1)
    mean = X.mean(dim=0)
    X -= mean
    total_var = X.pow(2).sum() / (N - 1)
    torch.manual_seed(seed)
    _, sv, V = torch.svd_lowrank(X, q=latent_dim + 10, niter=4)  # V: (P, q)
    eig = sv[:latent_dim].pow(2) / (N - 1)  # (D,) variances along the components
    noise = (total_var - eig.sum()).clamp_min(1e-12) / (X.shape[1] - latent_dim)
    pca = PCA(PCAConfig(image_size=S, latent_dim=latent_dim))
    pca.mean.copy_(mean)
    pca.components.copy_(V[:, :latent_dim].T)
    pca.scale.copy_(eig.sqrt())
    pca.logvar.copy_(torch.log(noise / eig))
    return pca
