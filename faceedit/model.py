"""The convolutional VAE (Kingma & Welling 2014) and its loss, configured by a frozen dataclass.

Encoder f(x) -> (mu, log sigma^2), z = mu + sigma * eps (reparameterization), decoder g(z) -> x~.
Loss per image: -log p(x | z) + beta * KL(N(mu, sigma^2) || N(0, I)) (beta: Higgins et al. 2017).
Two decoders (the likelihood p(x | z) = N(x~, s^2 I)):
  "fixed": s = 1, so -log p(x | z) = 1/2 ||x - x~||^2 + const (the DESIGN's loss, constant dropped);
  "sigma": a calibrated shared s (Rybkin et al. 2021, "Simple and Effective VAE Training with
           Calibrated Decoders", the "optimal sigma"): s^2 = the batch's mean squared error, so
           -log p(x | z) = P/2 (ln(2 pi s^2) + 1) with P = 3*S*S pixels. On [0, 1] pixels the fixed
           unit variance weights the reconstruction about 1/(2 * 0.005) times too little and the KL
           term dominates (blurry faces); the calibrated one lets the data set the balance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["group", "batch", "none"]
Likelihood = Literal["sigma", "fixed"]


MAX_SIDE = 1024  # image_size limit: far above the 64 and 128 px the project trains
MAX_STAGES, MAX_WIDTH = 8, 4096
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights


def _check_int(name: str, value: object, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (high is not None and value > high):
        limit = f" up to {high}" if high is not None else ""
        raise ValueError(f"{name}={value!r}: expected a whole number{limit}")


@dataclass(frozen=True)
class VAEConfig:
    image_size: int = field(default=64, metadata={"help": "side S of the square RGB images; a "
                            "multiple of 2**len(channels) (64 and 128 are the tested sizes)"})
    latent_dim: int = field(default=128, metadata={"help": "latent size D"})
    channels: tuple[int, ...] = field(default=(16, 64, 128, 256), metadata={
        "help": "encoder widths, one per stride-2 stage (the decoder mirrors them); "
                "S / 2**len(channels) is the bottleneck side. The first (full/half-resolution) "
                "width dominates CPU time (16 against 32: BENCHMARKS.md, Reconstruction quality)"})
    blocks: int = field(default=0, metadata={"help": "residual blocks per stage after each resampling "
                        "(0: a plain conv VAE, best within minutes of CPU; 1: better on a GPU)"})
    norm: Norm = field(default="none", metadata={"help": "normalization in conv layers: group "
                       "(GroupNorm, batch-independent), batch, none (fastest on CPU; fine at this depth)"})
    groups: int = field(default=8, metadata={"help": "GroupNorm groups (must divide every width)"})
    decoder: Likelihood = field(default="sigma", metadata={"help": "likelihood: sigma (calibrated shared "
                             "variance, Rybkin et al. 2021) or fixed (unit variance, 1/2||x-x~||^2)"})
    beta: float = field(default=1.0, metadata={"help": "weight of the KL term (beta-VAE; 1 = ELBO)"})
    min_log_sigma: float = field(default=-6.0, metadata={"help": "floor of ln s for the calibrated "
                                 "decoder (keeps the loss finite on a perfect fit)"})

    def __post_init__(self) -> None:
        # Types and bounds first: a config.json edited by hand must fail here, not while the
        # model tries to allocate it.
        for name in ("image_size", "latent_dim", "blocks", "groups"):
            _check_int(f"VAEConfig.{name}", getattr(self, name), MAX_SIDE if name == "image_size" else None)
        if not isinstance(self.channels, tuple) or not 1 <= len(self.channels) <= MAX_STAGES:
            raise ValueError(f"VAEConfig.channels={self.channels!r}: expected 1 to {MAX_STAGES} widths")
        for c in self.channels:
            _check_int("VAEConfig.channels", c, MAX_WIDTH)
        for name in ("beta", "min_log_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"VAEConfig.{name}={value!r}: expected a finite number")
        stages = len(self.channels)
        if stages < 1 or any(c < 1 for c in self.channels):
            raise ValueError(f"VAEConfig.channels={self.channels!r}: expected one or more positive widths")
        if self.image_size < 2**stages or self.image_size % 2**stages:
            raise ValueError(f"VAEConfig.image_size={self.image_size}: expected a multiple of "
                             f"2**len(channels) = {2**stages}")
        if self.latent_dim < 1:
            raise ValueError(f"VAEConfig.latent_dim={self.latent_dim}: expected >= 1")
        if self.norm == "group" and any(c % self.groups for c in self.channels):
            raise ValueError(f"VAEConfig.groups={self.groups} does not divide channels={self.channels}")
        if self.norm not in ("group", "batch", "none"):
            raise ValueError(f"VAEConfig.norm={self.norm!r}: expected group, batch or none")
        if self.decoder not in ("sigma", "fixed"):
            raise ValueError(f"VAEConfig.decoder={self.decoder!r}: expected sigma or fixed")
        if self.beta < 0 or self.blocks < 0:
            raise ValueError(f"VAEConfig: beta={self.beta}, blocks={self.blocks}: expected >= 0")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ValueError(f"VAEConfig: image_size={self.image_size}, latent_dim={self.latent_dim}, "
                             f"channels={self.channels}, blocks={self.blocks} make "
                             f"{self.parameter_count():.3g} parameters: over the {MAX_PARAMETERS:.0e} this "
                             "build allows (shrink them)")

    def parameter_count(self) -> int:
        """Weights and buffers the VAE of this config holds (counted before building it)."""
        widths, D, flat = (3, *self.channels), self.latent_dim, self.channels[-1] * self.bottleneck**2
        convs = sum(cin * cout * (9 + 16) for cin, cout in zip(widths[:-1], widths[1:]))
        blocks = 2 * self.blocks * sum(2 * 9 * c * c for c in self.channels)
        return convs + blocks + flat * 2 * D + D * flat + 16 * self.channels[0] * 3 + D * D + D

    @property
    def bottleneck(self) -> int:
        """Side of the smallest feature map, S / 2**len(channels)."""
        return self.image_size // 2 ** len(self.channels)


def _norm(kind: Norm, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))) at constant shape (pre-activation, He et al. 2016)."""

    def __init__(self, channels: int, norm: Norm, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, channels, groups), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            _norm(norm, channels, groups), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _stage(conv: nn.Module, out: int, cfg: VAEConfig) -> nn.Sequential:
    """A resampling conv, norm, SiLU, then cfg.blocks residual blocks at the new resolution."""
    layers = [conv, _norm(cfg.norm, out, cfg.groups), nn.SiLU()]
    layers += [ResBlock(out, cfg.norm, cfg.groups) for _ in range(cfg.blocks)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """(B, 3, S, S) in [0, 1] -> mu (B, D), logvar (B, D)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = (3, *cfg.channels)
        # 3x3 stride-2 convs: 9/16 of a 4x4's work (faster, no worse: BENCHMARKS.md, Reconstruction quality)
        self.stages = nn.Sequential(*[
            _stage(nn.Conv2d(cin, cout, 3, stride=2, padding=1), cout, cfg)
            for cin, cout in zip(widths[:-1], widths[1:])
        ])
        flat = cfg.channels[-1] * cfg.bottleneck**2
        self.head = nn.Linear(flat, 2 * cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stages(x * 2 - 1)  # (B, 3, S, S) -> (B, C_last, S/2^k, S/2^k); inputs centred on 0
        mu, logvar = self.head(h.flatten(1)).float().chunk(2, dim=1)  # (B, 2D) -> 2 x (B, D)
        return mu, logvar


class Decoder(nn.Module):
    """(B, D) -> (B, 3, S, S) in [0, 1]."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = cfg.channels[::-1]
        self.shape = (widths[0], cfg.bottleneck, cfg.bottleneck)
        self.head = nn.Linear(cfg.latent_dim, widths[0] * cfg.bottleneck**2)
        self.stages = nn.Sequential(*[
            _stage(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), cout, cfg)
            for cin, cout in zip(widths[:-1], widths[1:])
        ])
        # Straight to RGB at full resolution: without a further 16-channel layer at S x S (transposed
        # conv, SiLU, 3x3 conv) the model trains faster on the CPU and ends better in the same time
        # (runs side by side: BENCHMARKS.md, Reconstruction quality).
        self.out = nn.ConvTranspose2d(widths[-1], 3, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, *self.shape)  # (B, D) -> (B, C_last, S/2^k, S/2^k)
        h = self.stages(h)  # -> (B, C_first, S/2, S/2)
        return torch.sigmoid(self.out(h).float())  # -> (B, 3, S, S) in [0, 1]


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # (B, 3, S, S) decoder mean g(z), z drawn by reparameterization
    mu: torch.Tensor  # (B, D)
    logvar: torch.Tensor  # (B, D) log sigma^2 of q(z | x)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig = VAEConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # Running estimate of the calibrated decoder's ln s (an EMA of the training batches'
        # optimal ln s), used where no batch defines it: validation ELBO, bits/dim. Unused for "fixed".
        self.register_buffer("log_sigma", torch.zeros(()))
        # The prior that `sample` draws from: N(prior_mean, L L^T) with L = prior_scale_tril. N(0, I)
        # until `fit_prior` replaces it with a Gaussian fitted to the aggregate posterior.
        self.register_buffer("prior_mean", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale_tril", torch.eye(config.latent_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) float in [0, 1] -> mu (B, D), logvar (B, D)."""
        S = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, S, S):
            raise ValueError(f"VAE.encode: got images of shape {tuple(x.shape)}, expected (B, 3, {S}, {S})")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, S, S) in [0, 1]."""
        D = self.config.latent_dim
        if z.dim() != 2 or z.shape[1] != D:
            raise ValueError(f"VAE.decode: got codes of shape {tuple(z.shape)}, expected (B, {D})")
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): differentiable in mu and logvar. (B, D) -> (B, D)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        return VAEOutput(self.decode(self.reparameterize(mu, logvar)), mu, logvar)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               temperature: float = 1.0, standard: bool = False) -> torch.Tensor:
        """n faces from the prior, x~ = g(z). -> (n, 3, S, S) in [0, 1].

        z ~ N(m, t^2 L L^T), the fitted prior of `fit_prior` (N(0, I) until fitted); standard=True
        draws z ~ N(0, t^2 I) whatever was fitted. temperature t < 1 stays nearer the mode
        (as Kingma & Dhariwal 2018, Glow)."""
        return self.decode(self.sample_latents(n, generator, temperature, standard))

    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator | None = None,
                       temperature: float = 1.0, standard: bool = False) -> torch.Tensor:
        """The codes `sample` decodes. -> (n, D)."""
        eps = torch.randn(n, self.config.latent_dim, generator=generator, device=self.prior_mean.device)
        if standard:
            return eps * temperature
        return self.prior_mean + temperature * eps @ self.prior_scale_tril.T

    @torch.no_grad()
    def fit_prior(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """Replace the sampling prior by the Gaussian with the aggregate posterior's moments.

        The aggregate posterior q(z) = 1/N sum_i N(mu_i, diag sigma_i^2) has mean mean(mu) and
        covariance cov(mu) + diag(mean(sigma^2)); a VAE trained for minutes leaves it far from N(0, I)
        (the main job's 8-minute model: eigenvalues 0.15 to 8.9), so N(0, I) codes decode to blobs
        while codes from the fitted Gaussian decode to faces: ex-post density estimation (Ghosh et al.
        2020, "From Variational to Deterministic Autoencoders", Section 4). mu, logvar: (N, D), N > D.
        """
        D = self.config.latent_dim
        if mu.dim() != 2 or mu.shape[1] != D or mu.shape != logvar.shape or len(mu) <= D:
            raise ValueError(f"VAE.fit_prior: got mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)}, "
                             f"expected two (N, {D}) with N > {D}")
        mu, var = mu.double(), logvar.double().exp()
        cov = torch.cov(mu.T) + torch.diag(var.mean(0))
        self.prior_mean.copy_(mu.mean(0))
        self.prior_scale_tril.copy_(torch.linalg.cholesky(cov))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(mu): the deterministic reconstruction. (B, 3, S, S) -> (B, 3, S, S)."""
        return self.decode(self.encode(x)[0])


class VAELoss(NamedTuple):
    """Per-image means over the batch, in nats. total = reconstruction + beta * kl."""
    total: torch.Tensor
    reconstruction: torch.Tensor  # -log p(x | z) (fixed decoder: 1/2 ||x - x~||^2, constant dropped)
    kl: torch.Tensor
    log_sigma: torch.Tensor  # ln s of the decoder used (0 for "fixed")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - ln sigma_j^2 - 1), per row.

    Kingma & Welling 2014, Appendix B. (B, D) -> (B,).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


def gaussian_nll(x: torch.Tensor, recon: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-ln N(x; recon, s^2 I) summed over pixels, with ln s shared. (B, 3, S, S) -> (B,)."""
    sq = (x - recon).pow(2).flatten(1).sum(dim=1)
    P = x[0].numel()
    return 0.5 * sq * torch.exp(-2 * log_sigma) + P * (log_sigma + 0.5 * math.log(2 * math.pi))


def optimal_log_sigma(x: torch.Tensor, recon: torch.Tensor, floor: float) -> torch.Tensor:
    """ln s with s^2 = mean squared error of the batch, the s that maximizes its likelihood
    (Rybkin et al. 2021, Section 4), floored at `floor`. Detached: at the optimum the loss has zero
    gradient in s, so the gradient for the network is the same either way."""
    mse = (x - recon).detach().float().pow(2).mean()
    return torch.clamp(0.5 * torch.log(mse), min=floor)


def vae_loss(x: torch.Tensor, out: VAEOutput, config: VAEConfig,
             log_sigma: torch.Tensor | None = None) -> VAELoss:
    """The loss of the DESIGN: reconstruction + beta * KL, means over the batch.

    x: (B, 3, S, S) in [0, 1]; out: the VAE's forward output. For the "sigma" decoder, `log_sigma`
    fixes ln s (validation uses the model's running estimate); None uses the batch's optimal s.
    """
    recon = out.recon.float()
    kl = kl_divergence(out.mu.float(), out.logvar.float()).mean()
    if config.decoder == "fixed":
        rec = 0.5 * (x - recon).pow(2).flatten(1).sum(dim=1).mean()
        ls = torch.zeros((), device=x.device)
    else:
        ls = optimal_log_sigma(x, recon, config.min_log_sigma) if log_sigma is None else log_sigma
        rec = gaussian_nll(x, recon, ls).mean()
    return VAELoss(rec + config.beta * kl, rec, kl, ls.detach())
