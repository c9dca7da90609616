"""Image-quality and likelihood figures shared by the VAE, the PCA baseline and the benchmarks."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, pixel range [0, 1]:
    10 log10(1 / MSE). (B, 3, S, S) x2 -> (B,). Figures average it over images (mean of per-image
    PSNR, not the PSNR of the mean MSE, which is lower)."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(dim=1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def auc_per_attribute(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ROC AUC of each logit column as a classifier of its label column; NaN where a column of
    labels holds one class only (no AUC exists). (N, K), (N, K) -> (K,).

    Computed from ranks (Mann-Whitney U, ties averaged), the same number sklearn's roc_auc_score gives.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels) > 0
    if logits.shape != labels.shape or logits.ndim != 2:
        raise ValueError(f"auc_per_attribute: logits {logits.shape} and labels {labels.shape} "
                         "must both be (N, K)")
    out = np.full(logits.shape[1], np.nan)
    for k in range(logits.shape[1]):
        pos = labels[:, k]
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(logits[:, k])  # 1-based, ties averaged
        out[k] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out


def bits_per_dim(nll_nats: torch.Tensor, dims: int) -> torch.Tensor:
    """Bits per dimension of 8-bit images from a negative log-likelihood (here: the negative ELBO)
    in nats of a density over pixels scaled to [0, 1]: rescaling to [0, 256) divides the density by
    256 per dimension, so bpd = (nll + dims ln 256) / (dims ln 2) (the convention of Dinh et al.
    2017, Real NVP; without dequantization noise it is the continuous bound, not a discrete one)."""
    return (nll_nats + dims * math.log(256)) / (dims * math.log(2))


@torch.no_grad()
def reconstruction_psnr(model: torch.nn.Module, cache, split: str = "val", batch_size: int = 256,
                        limit: int = 0) -> float:
    """Mean per-image PSNR of `model.reconstruct` (decode of the code's mean) over a cache split
    (the first `limit` images when limit > 0). Works for the VAE and the PCA baseline alike."""
    from faceedit.cache import to_float

    rows = cache.indices(split)
    rows = rows[:limit] if limit else rows
    if len(rows) == 0:
        raise ValueError(f"reconstruction_psnr: the {split} split of {cache.root} is empty")
    device = next(iter(model.buffers()), torch.zeros(())).device
    total = 0.0
    for i in range(0, len(rows), batch_size):
        x = to_float(cache.images[rows[i: i + batch_size]]).to(device)
        total += float(psnr(model.reconstruct(x), x).sum())
    return total / len(rows)
