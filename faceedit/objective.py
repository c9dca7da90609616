"""The VAE's part of training (a `faceedit.trainer.Objective`): its loss on a batch, validation
metrics (loss terms, PSNR of reconstructions from mu, bits/dim of the ELBO) and figures (a grid of
reconstructions, a grid of prior samples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from faceedit.attributes import attribute_index
from faceedit.cache import Cache, to_float
from faceedit.figures import grid, save_png
from faceedit.metrics import bits_per_dim, psnr
from faceedit.model import VAE, VAEConfig, VAELoss, VAEOutput, gaussian_nll, kl_divergence, vae_loss
from faceedit.recipe import check_image_size
from faceedit.trainer import Batch

SIGMA_MOMENTUM = 0.95  # EMA of the calibrated decoder's ln s: settles within ~50 steps


class VAEObjective:
    select = ("psnr", "max")  # the weights kept with TrainConfig.keep="best": the best val PSNR

    def __init__(self, config: VAEConfig, figure_images: int = 32, figure_samples: int = 64,
                 map_faces: int = 256):
        self.config = config
        self.figure_images, self.figure_samples = figure_images, figure_samples
        self.map_faces = map_faces  # val faces whose codes are kept every epoch (faceedit/codemap.py)

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
    def records(self, model: nn.Module, batches: Iterator[Batch]) -> dict[str, np.ndarray]:
        """codes: mu of the first `map_faces` val faces, (N, D) float32, for the map of the codes."""
        codes, n = [], 0
        for batch in batches:
            if n >= self.map_faces:
                break
            codes.append(self.codes(model, batch)[: self.map_faces - n].float().cpu())
            n += len(codes[-1])
        return {"codes": torch.cat(codes).numpy()} if codes else {}

    def codes(self, model: VAE, batch: Batch) -> torch.Tensor:
        """mu of a batch. (B, D)"""
        return model.encode(batch.images)[0]

    @torch.no_grad()
    def figures(self, model: VAE, batch: Batch) -> dict[str, torch.Tensor]:
        """reconstructions: rows of 8 originals, each followed by a row of their decode(mu);
        samples: decode(z), z ~ N(0, I) with a fixed seed (the same z every epoch; the prior is
        fitted after training, see `fit_prior`)."""
        x = batch.images[: self.figure_images].float()
        recon = model.reconstruct(x).float()
        rows = [t for i in range(0, len(x), 8) for t in (x[i: i + 8], recon[i: i + 8])]
        g = torch.Generator(device=x.device).manual_seed(1234)
        samples = model.sample(self.figure_samples, generator=g)
        return {"reconstructions": grid(torch.cat(rows), ncol=8), "samples": grid(samples, ncol=8)}


@torch.no_grad()
def encode_rows(model: nn.Module, cache: Cache, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z | x) of the cache's faces `rows` -> mu, logvar (N, D); a conditional model
    (faceedit/cvae.py, which has `condition_of`) is given the faces' own labels."""
    x = to_float(cache.images[rows])
    if hasattr(model, "condition_of"):
        return model.encode(x, model.condition_of(torch.from_numpy(cache.labels[rows])))
    return model.encode(x)


@torch.no_grad()
def fit_prior(model: VAE, cache: Cache, log_dir: str | Path | None = None, batch_size: int = 500,
              max_images: int = 50_000) -> dict[str, Any]:
    """Fit the model's sampling prior to its aggregate posterior on the cache's train split (at
    most `max_images`, evenly spaced) -> what to record in the bundle. With `log_dir`, also save
    figures/samples_fitted.png beside the per-epoch grids (the same seed as theirs)."""
    rows = cache.indices("train")
    rows = rows[np.linspace(0, len(rows) - 1, min(len(rows), max_images)).astype(int)]
    if len(rows) <= model.config.latent_dim:  # too few faces for a full covariance
        return {"fitted_on": None, "images": len(rows),
                "why": f"N(0, I) kept: {len(rows)} train faces, a fit needs more than D = {model.config.latent_dim}"}
    model.eval()
    codes = [encode_rows(model, cache, rows[i: i + batch_size]) for i in range(0, len(rows), batch_size)]
    mu, logvar = (torch.cat(c) for c in zip(*codes))
    model.fit_prior(mu, logvar)
    if log_dir is not None and not hasattr(model, "condition_of"):  # a CVAE's samples need labels
        g = torch.Generator().manual_seed(1234)
        save_png(Path(log_dir) / "figures" / "samples_fitted.png", grid(model.sample(64, g), ncol=8))
    eig = torch.linalg.eigvalsh(model.prior_scale_tril @ model.prior_scale_tril.T)
    return {"fitted_on": "train", "images": len(rows), "variance_min": float(eig.min()),
            "variance_max": float(eig.max())}


@dataclass(frozen=True)
class VAERecipe:
    """The VAE as a `faceedit.recipe.Recipe`: trained by `faceedit.recipe.train_bundle` in this
    process or by workers/train.py on Ray; its bundle records the fitted sampling prior; its log gets the map of the codes."""

    config: VAEConfig
    map_attribute: str = "Smiling"  # colours the map of the codes drawn into the log ("": none)

    def __post_init__(self) -> None:
        if self.map_attribute:
            attribute_index(self.map_attribute)  # a bad name fails now, not after training

    def build(self) -> VAE:
        return VAE(self.config)

    def objective(self) -> VAEObjective:
        return VAEObjective(self.config)

    def check(self, cache: Cache) -> None:
        check_image_size(cache, self.config.image_size, "model")

    def finish(self, model: VAE, cache: Cache, log_dir: Path | None) -> dict[str, Any]:
        from faceedit.codemap import draw_for_bundle

        record = {"prior": fit_prior(model, cache, log_dir)}
        # figures/codemap.gif in the log; the bundle points to it, so the audit report shows it
        record.update(draw_for_bundle(log_dir, cache, self.map_attribute))
        return record
