"""Latent score search (the lecture's molecules slide: Gomez-Bombarelli et al. 2018, "Automatic
Chemical Design Using a Data-Driven Continuous Representation of Molecules", gradient search on a
property predictor in a VAE's latent space), here on faces.

- A predictor on z: per attribute a logistic regression on the training faces' codes mu, then
  Platt-calibrated (Platt 1999: a 1-D logistic fit of its logit) on the val faces, so its
  P(attribute) means what it says on faces it did not see. `LatentPredictor.logits(z)` is linear
  in z.
- The search: from a face's code z0, projected gradient steps on
      +-logit_a(z)  -  hold * sum_b ((logit_b(z) - logit_b(z0)) / sd_b)^2  -  prior * 1/2 ||L^-1 (z - m)||^2 / D
  (b: every other attribute, sd_b its logit's spread over the training codes; N(m, L L^T) the
  bundle's fitted prior, where the decoder has seen codes), each step projected back into the ball
  ||z - z0|| <= budget. It stops moving a face once its predicted P(a) reaches `target`. An edit of
  strength s moves at most |s| times the attribute's naive vector length, up (s > 0) or down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import expit

from faceedit.attributes import ATTRIBUTES, attribute_index


@dataclass(frozen=True)
class SearchConfig:
    hold: float = field(default=0.1, metadata={"help": "weight of keeping the other attributes' "
                        "predicted logits (in sd units) where they were (the tradeoff on the real "
                        "faces: BENCHMARKS.md, Latent score search)"})
    prior: float = field(default=1.0, metadata={"help": "weight of the fitted prior's negative log "
                         "density (per dimension): keeps codes where the decoder is good"})
    steps: int = field(default=40, metadata={"help": "projected gradient steps"})
    target: float = field(default=0.995, metadata={"help": "stop moving a face once its predicted "
                          "P(attribute) passes this (1 - target when lowering)"})

    def __post_init__(self) -> None:
        if self.hold < 0 or self.prior < 0 or self.steps < 1 or not 0.5 < self.target < 1:
            raise ValueError(f"SearchConfig: hold={self.hold}, prior={self.prior}, steps={self.steps}, "
                             f"target={self.target}: expected hold, prior >= 0, steps >= 1, 0.5 < target < 1")


@dataclass(frozen=True)
class LatentPredictor:
    """Calibrated per-attribute logistic regressions on z: logit = z @ weight.T + bias."""
    weight: np.ndarray  # (40, D)
    bias: np.ndarray  # (40,)
    sd: np.ndarray  # (40,) spread of each logit over the training codes
    val_auc: np.ndarray  # (40,) on the val codes (NaN where a class is missing)
    val_ece: np.ndarray  # (40,) expected calibration error on the val codes, after calibration
    train_max: np.ndarray  # (40,) the highest logit any training face's code gets

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 40)."""
        w = torch.as_tensor(self.weight, dtype=z.dtype, device=z.device)
        return z @ w.T + torch.as_tensor(self.bias, dtype=z.dtype, device=z.device)


def fit_predictor(mu: np.ndarray, labels: np.ndarray, val_mu: np.ndarray, val_labels: np.ndarray,
                  l2: float = 1e-3) -> LatentPredictor:
    """Fit on (N, D) codes with (N, 40) {0, 1} labels; calibrate and score on the val codes.

    All 40 regressions at once (L-BFGS on the mean cross-entropy + l2/2 ||w||^2, float64); then
    per attribute the Platt pair (a, c): P = sigmoid(a * logit + c) fitted on the val codes.
    """
    from faceedit.judge import auc_per_attribute

    mu, val_mu = np.asarray(mu, np.float64), np.asarray(val_mu, np.float64)
    if mu.ndim != 2 or val_mu.ndim != 2 or mu.shape[1] != val_mu.shape[1]:
        raise ValueError(f"fit_predictor: codes of shapes {mu.shape} and {val_mu.shape}, expected (N, D) twice")
    if labels.shape != (len(mu), len(ATTRIBUTES)) or val_labels.shape != (len(val_mu), len(ATTRIBUTES)):
        raise ValueError(f"fit_predictor: labels {labels.shape} and {val_labels.shape} do not match "
                         f"the codes ({len(mu)} and {len(val_mu)} rows of {len(ATTRIBUTES)})")
    scale = mu.std(axis=0).clip(1e-6)  # fit on standardized codes (better conditioned), undo after
    x = torch.from_numpy((mu - mu.mean(axis=0)) / scale)
    y = torch.from_numpy((labels > 0).astype(np.float64))
    W = torch.zeros(len(ATTRIBUTES), mu.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(ATTRIBUTES), dtype=torch.float64, requires_grad=True)
    _lbfgs([W, b], lambda: torch.nn.functional.binary_cross_entropy_with_logits(x @ W.T + b, y)
           * len(ATTRIBUTES) + 0.5 * l2 * W.pow(2).sum())
    w = W.detach().numpy() / scale  # logit = (mu - mean) / scale @ W.T + b
    c = b.detach().numpy() - w @ mu.mean(axis=0)
    raw = torch.from_numpy(val_mu @ w.T + c)  # (V, 40)
    vy = torch.from_numpy((val_labels > 0).astype(np.float64))
    a = torch.ones(len(ATTRIBUTES), dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(len(ATTRIBUTES), dtype=torch.float64, requires_grad=True)
    _lbfgs([a, c0], lambda: torch.nn.functional.binary_cross_entropy_with_logits(raw * a + c0, vy)
           * len(ATTRIBUTES))
    a, c0 = a.detach().numpy(), c0.detach().numpy()
    w, c = w * a[:, None], c * a + c0
    p = expit(val_mu @ w.T + c)  # (V, 40)
    auc, ece = auc_per_attribute(p, val_labels), np.full(len(ATTRIBUTES), np.nan)
    for k in range(len(ATTRIBUTES)):
        vk = val_labels[:, k] > 0
        if vk.any() and not vk.all():
            ece[k] = expected_calibration_error(p[:, k], vk)
    train_logits = mu @ w.T + c
    return LatentPredictor(w, c, np.maximum(train_logits.std(axis=0), 1e-6), auc, ece,
                           train_logits.max(axis=0))


def _lbfgs(params: list[torch.Tensor], loss_fn, iterations: int = 200) -> None:
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iterations, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Mean |P - frequency| over equal-width probability bins, weighted by their counts."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for i in range(bins):
        m = idx == i
        if m.any():
            err += m.sum() * abs(p[m].mean() - y[m].mean())
    return float(err / len(p))


@torch.enable_grad()  # callers may run under no_grad (the comparison does); the search needs gradients
def search(z0: torch.Tensor, predictor: LatentPredictor, attr: str, budget: float | torch.Tensor,
           prior_mean: torch.Tensor, prior_scale_tril: torch.Tensor,
           config: SearchConfig = SearchConfig(), up: bool = True) -> torch.Tensor:
    """Codes scored higher (up) or lower for `attr`, each within `budget` (L2) of its start.

    z0 (B, D); budget a float or (B,) >= 0; prior N(prior_mean (D,), L L^T). -> (B, D).
    """
    k = attribute_index(attr)
    if z0.dim() != 2:
        raise ValueError(f"search: got codes of shape {tuple(z0.shape)}, expected (B, D)")
    budget = torch.as_tensor(budget, dtype=z0.dtype).expand(len(z0)).clone()
    if (budget < 0).any():
        raise ValueError("search: budget must be >= 0")
    sign = 1.0 if up else -1.0
    stop = float(np.log(config.target / (1 - config.target)))  # logit where a face stops moving
    others = torch.tensor([b != k for b in range(len(ATTRIBUTES))])
    sd = torch.as_tensor(predictor.sd, dtype=z0.dtype)
    L = prior_scale_tril.to(z0.dtype)
    m = prior_mean.to(z0.dtype)
    D = z0.shape[1]
    z0 = z0.detach()
    held = predictor.logits(z0)[:, others]
    z = z0.clone()
    # (B,) steps that shrink linearly to 0 and add up to 2.5 budgets: far enough to reach the edge
    # of the ball, small enough at the end to settle where the penalties balance the score
    step = 5.0 * budget / config.steps
    for t_step in range(config.steps):
        z.requires_grad_(True)
        logits = predictor.logits(z)
        white = torch.linalg.solve_triangular(L, (z - m).T, upper=False).T  # L^-1 (z - m)
        objective = (sign * logits[:, k]
                     - config.hold * ((logits[:, others] - held) / sd[others]).pow(2).sum(1)
                     - config.prior * 0.5 * white.pow(2).sum(1) / D)
        (grad,) = torch.autograd.grad(objective.sum(), z)
        with torch.no_grad():
            before = sign * logits[:, k]
            active = (before < stop).to(z.dtype)  # faces past the target stay put
            direction = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            new = z + (active * step * (1 - t_step / config.steps))[:, None] * direction
            move = new - z0
            norm = move.norm(dim=1)
            scale = torch.where(norm > budget, budget / norm.clamp_min(1e-12), torch.ones_like(norm))
            new = z0 + move * scale[:, None]
            # a face that crosses the target stops on it: back along its last step (the ball is
            # convex, so the point stays inside; exact for this linear predictor)
            after = sign * predictor.logits(new)[:, k]
            crossed = (before < stop) & (after > stop)
            t = torch.where(crossed, (stop - before) / (after - before).clamp_min(1e-12), torch.ones_like(after))
            z = (z.detach() + t[:, None] * (new - z.detach())).detach()
    return z


def codes_of(model: torch.nn.Module, cache, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """mu of the cache's faces `rows` -> (N, D) float64 (a conditional model is given their labels)."""
    from faceedit.objective import encode_rows

    return np.concatenate([encode_rows(model, cache, rows[i: i + batch_size])[0].double().numpy()
                           for i in range(0, len(rows), batch_size)])


def label_probe(model: torch.nn.Module, cache, train_faces: int = 6000) -> LatentPredictor:
    """How much of each label a model's code mu carries: a linear probe (`fit_predictor`) fitted on
    `train_faces` evenly spaced train faces, its `val_auc` on the whole val split (0.5: nothing)."""
    train = cache.indices("train")
    train = train[np.linspace(0, len(train) - 1, min(train_faces, len(train))).astype(int)]
    val = cache.indices("val")
    if len(val) == 0:
        raise ValueError(f"{cache.root}: the val split is empty; the probe is scored on held-out faces")
    return fit_predictor(codes_of(model, cache, train), cache.labels[train],
                         codes_of(model, cache, val), cache.labels[val])
