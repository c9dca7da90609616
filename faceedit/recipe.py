"""One path from a dataset cache to a model bundle, for any model kind.

A model kind (the VAE, the audit's judge, later a conditional VAE) brings a `Recipe`: its config,
a factory that builds a fresh model from it, its `Objective` for the model-agnostic loop
(faceedit/trainer.py), a check of the cache before training and what to record after it (the VAE
fits its sampling prior, the judge measures its held-out AUC). `train_bundle` trains any recipe in
this process and writes the bundle; workers/train.py trains the same recipe on Ray workers and
writes the bundle with the same `write_bundle`, so the two paths cannot drift apart.

A recipe is a small frozen dataclass: Ray ships it to its workers by value.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from faceedit.cache import Cache
from faceedit.trainer import Objective, TrainConfig, TrainResult, fit


class Recipe(Protocol):
    """What a model kind brings to training."""

    config: Any  # the model's config dataclass: builds it, and names a Ray run with the settings

    def build(self) -> nn.Module:
        """A fresh model (initial weights drawn from torch's global RNG, seeded by the caller)."""

    def objective(self) -> Objective:
        """The model's part of training: loss, validation, figures."""

    def check(self, cache: Cache) -> None:
        """Raise ValueError, before any training, when the cache does not suit the model."""

    def finish(self, model: nn.Module, cache: Cache, log_dir: Path | None) -> dict[str, Any]:
        """After training (model on the CPU, eval mode): what the bundle records besides the
        training settings and metrics, e.g. {"prior": ...} or {"judge": ...}."""


def check_image_size(cache: Cache, image_size: int, what: str) -> None:
    """A clear error when the cache's images are not the size the model reads."""
    if cache.size != image_size:
        raise ValueError(f"{cache.root}: images are {cache.size}x{cache.size}, the {what} config "
                         f"expects image_size={image_size}")


def train_model(cache: str | Path | Cache, recipe: Recipe, train_config: TrainConfig,
                log_dir: str | Path | None = None, **fit_seams: Any) -> TrainResult:
    """Train the recipe's model on the cache's train split with the plain loop, in this process.

    The result's model is on the CPU, in eval mode. `fit_seams` go to `trainer.fit` unchanged.
    """
    cache = cache if isinstance(cache, Cache) else Cache.open(cache)
    recipe.check(cache)
    torch.manual_seed(train_config.seed)  # initial weights (the Ray worker seeds the same way)
    result = fit(recipe.build(), recipe.objective(), cache, train_config, log_dir, **fit_seams)
    result.model = result.model.cpu().eval()
    return result


def write_bundle(out: str | Path, recipe: Recipe, model: nn.Module, cache: Cache,
                 train_config: TrainConfig, *, metrics: dict[str, float], steps: int,
                 log_dir: str | Path | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Finish a trained model (`recipe.finish`) and write its bundle to `out` (atomically).

    config.json records the cache's content hash, the training settings, the final metrics, the
    step count, what `finish` returned and `meta`. Returns that record.
    """
    from faceedit.bundle import save_bundle

    log = Path(log_dir) if log_dir is not None else None
    record = {"cache": cache.hash, "training": asdict(train_config),
              **recipe.finish(model, cache, log), "metrics": metrics, "steps": steps, **(meta or {})}
    save_bundle(out, model, record)
    return record


def train_bundle(cache: str | Path | Cache, out: str | Path, recipe: Recipe,
                 train_config: TrainConfig, log_dir: str | Path | None = None,
                 meta: dict[str, Any] | None = None, **fit_seams: Any) -> tuple[TrainResult, dict[str, Any]]:
    """Train the recipe's model in this process (the plain loop) and write its bundle to `out`.

    `log_dir` receives metrics.jsonl and figures/; `fit_seams` go to `trainer.fit`. Returns the
    training result and what the bundle's config.json records (see `write_bundle`).
    """
    cache = cache if isinstance(cache, Cache) else Cache.open(cache)
    result = train_model(cache, recipe, train_config, log_dir, **fit_seams)
    record = write_bundle(out, recipe, result.model, cache, train_config, metrics=result.metrics,
                          steps=result.step, log_dir=log_dir, meta=meta)
    return result, record
