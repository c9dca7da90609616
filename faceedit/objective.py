"""The VAE's part of training (a `faceedit.trainer.Objective`): its loss on a batch, validation
metrics (loss terms, PSNR of reconstructions from mu, bits/dim of the ELBO) and figures (a grid of
reconstructions, a grid of prior samples)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from faceedit.cache import Cache

from faceedit.figures import grid
from faceedit.metrics import bits_per_dim, psnr
from faceedit.model import VAE, VAEConfig, VAELoss, VAEOutput, gaussian_nll, kl_divergence, vae_loss
from faceedit.trainer import Batch, TrainConfig, TrainResult, fit

SIGMA_MOMENTUM = 0.95  # EMA of the calibrated decoder's ln s: settles within ~50 steps


class VAEObjective:
    def __init__(self, config: VAEConfig, figure_images: int = 32, figure_samples: int = 64):
        self.config = config
        self.figure_images, self.figure_samples = figure_images, figure_samples

    def loss(self, model: nn.Module, batch: Batch) -> VAELoss:
        return vae_loss(batch.images, model(batch.images), self.config)

    @torch.no_grad()
    def after_step(self, model: VAE, loss: VAELoss) -> None:
        if self.config.decoder == "sigma":
            model.log_sigma.lerp_(loss.log_sigma.to(model.log_sigma), 1 - SIGMA_MOMENTUM)

    @torch.no_grad()
    def validate(self, model: VAE, batches: Iterator[Batch]) -> dict[str, float]:
        """Means over the val images: loss terms (the decoder's s fixed at its running estimate),
        PSNR of decode(mu), and bits/dim of the single-sample ELBO (beta = 1, with the Gaussian
        decoder's normalizing constant)."""
        cfg, sums, n = self.config, {}, 0
        log_sigma = model.log_sigma if cfg.decoder == "sigma" else torch.zeros((), device=model.log_sigma.device)
        for batch in batches:
            x = batch.images.float()
            mu, logvar = model.encode(batch.images)
            recon = model.decode(model.reparameterize(mu, logvar)).float()
            terms = vae_loss(x, VAEOutput(recon, mu, logvar), cfg, log_sigma=log_sigma if cfg.decoder == "sigma" else None)
            nll = gaussian_nll(x, recon, log_sigma) + kl_divergence(mu.float(), logvar.float())
            values = {"total": terms.total * len(x), "reconstruction": terms.reconstruction * len(x),
                      "kl": terms.kl * len(x), "psnr": psnr(model.decode(mu), x).sum(),
                      "bpd": bits_per_dim(nll, x[0].numel()).sum()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += len(x)
        out = {k: v / n for k, v in sums.items()}
        out["log_sigma"] = float(log_sigma)
        return out

    @torch.no_grad()
    def figures(self, model: VAE, batch: Batch) -> dict[str, torch.Tensor]:
        """reconstructions: rows of 8 originals, each followed by a row of their decode(mu);
        samples: decode(z), z ~ N(0, I) with a fixed seed (the same z every epoch)."""
        x = batch.images[: self.figure_images].float()
        recon = model.reconstruct(x).float()
        rows = [t for i in range(0, len(x), 8) for t in (x[i: i + 8], recon[i: i + 8])]
        g = torch.Generator(device=x.device).manual_seed(1234)
        samples = model.sample(self.figure_samples, generator=g)
        return {"reconstructions": grid(torch.cat(rows), ncol=8), "samples": grid(samples, ncol=8)}


def train_vae(cache: str | Path | Cache, out: str | Path, model_config: VAEConfig,
              train_config: TrainConfig, log_dir: str | Path | None = None,
              meta: dict[str, Any] | None = None, **fit_seams: Any) -> TrainResult:
    """Train a VAE in this process (the plain loop) and write its bundle to `out` (atomically).

    The bundle's config.json records the cache's content hash, the training settings and the final
    metrics; `log_dir` receives metrics.jsonl and figures/. `fit_seams` go to `trainer.fit`.
    """
    from faceedit.bundle import save_bundle

    cache = cache if isinstance(cache, Cache) else Cache.open(cache)
    if cache.size != model_config.image_size:
        raise ValueError(f"{cache.root}: images are {cache.size}x{cache.size}, the model config "
                         f"expects image_size={model_config.image_size}")
    torch.manual_seed(train_config.seed)  # initial weights (the Ray worker seeds the same way)
    model = VAE(model_config)
    result = fit(model, VAEObjective(model_config), cache, train_config, log_dir, **fit_seams)
    result.model.cpu().eval()
    save_bundle(out, result.model, {"cache": cache.hash, "training": asdict(train_config),
                                    "metrics": result.metrics, "steps": result.step, **(meta or {})})
    return result
