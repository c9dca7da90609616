"""The model-agnostic loop: it learns, stops on a non-finite loss, resumes exactly, shards rows."""

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit.bundle import weights_digest
from faceedit.cache import Cache, write_arrays
from faceedit.model import VAE, VAEConfig
from faceedit.objective import VAEObjective
from faceedit.trainer import NonFiniteLoss, ShardedBatches, TrainConfig, fit, lr_factor

TINY = VAEConfig(image_size=16, latent_dim=4, channels=(8, 16), groups=4, norm="none")
FAST = TrainConfig(epochs=2, max_minutes=0, batch_size=8, lr=3e-3, progress=False, threads=1,
                   device="cpu")


def make_cache(root: Path, n: int = 64, size: int = 16, val: int = 16, seed: int = 0) -> Path:
    """A cache in faceedit.cache's format: coloured discs on grey (learnable, varied)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 3)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (r / 2) ** 2
        images[i] = 255 * (0.2 + 0.6 * disc[None] * rng.uniform(0, 1, (3, 1, 1)))
    return write_arrays(root, images, rng.integers(0, 2, (n, 40)), f"test-{seed}", val=val)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache.open(make_cache(tmp_path_factory.mktemp("cache")))


def _train(cache, config=FAST, **seams):
    torch.manual_seed(config.seed)
    model = VAE(TINY)
    return fit(model, VAEObjective(TINY), cache, config, **seams)


def test_loss_decreases_and_logs(cache, tmp_path):
    result = _train(cache, replace(FAST, epochs=6), out_dir=tmp_path)
    history = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5, 6]
    assert history[-1]["val_total"] < history[0]["val_total"]
    assert history[-1]["val_psnr"] > history[0]["val_psnr"] + 1
    assert history[-1]["train_total"] < history[1]["train_total"]
    assert result.step == 6 * (48 // 8)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert {"reconstructions_e000.png", "samples_e000.png", "samples_e006.png"} <= figures


class _Exploding(VAEObjective):
    def __init__(self, config, at_step):
        super().__init__(config)
        self.at_step, self.calls = at_step, 0

    def loss(self, model, batch):
        self.calls += 1
        loss = super().loss(model, batch)
        if self.calls == self.at_step:
            return loss._replace(total=loss.total * float("nan"))
        return loss


def test_non_finite_loss_stops_naming_the_step(cache):
    model = VAE(TINY)
    with pytest.raises(NonFiniteLoss, match=r"step 4 \(epoch 1, batch 4\).*nan"):
        fit(model, _Exploding(TINY, at_step=4), cache, FAST)


def test_resume_continues_exactly(cache):
    config = replace(FAST, epochs=3, report_every=4)
    whole = _train(cache, config)
    states = []
    _train(cache, config, on_report=lambda m, s: states.append((m, s)))
    # a checkpoint in the middle of epoch 2 (step 8 of 18: 6 steps per epoch)
    metrics, state = next((m, s) for m, s in states if s["step"] == 8)
    assert state["epoch"] == 1 and state["epoch_step"] == 2
    torch.manual_seed(123)  # a fresh process: other weights, other RNG, until the state is loaded
    resumed = fit(VAE(TINY), VAEObjective(TINY), cache, config, resume=state)
    assert resumed.step == whole.step == 18
    assert weights_digest(resumed.model) == weights_digest(whole.model)


def test_report_receives_metrics_and_a_checkpoint_state(cache):
    reports = []
    _train(cache, replace(FAST, report_every=4), on_report=lambda m, s: reports.append((m, s)))
    steps = [s["step"] for _, s in reports]
    assert steps == [4, 6, 8, 12]  # every 4 steps, plus each epoch end (6 steps per epoch)
    m, s = reports[1]
    assert {"model", "optimizer", "scheduler", "epoch", "step", "rng"} <= set(s)
    assert "val_psnr" in m and "val_psnr" not in reports[0][0]  # validation at epoch ends only


def test_wrap_model_hook_trains_through_the_wrapper(cache):
    wrapped = []

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            wrapped.append(len(x))
            return self.module(x)

    result = _train(cache, replace(FAST, epochs=1), wrap_model=Wrapper)
    assert len(wrapped) == 6 and isinstance(result.model, VAE)


def test_sharded_batches_are_disjoint_and_cover_the_rows():
    rows = np.arange(100, 150)
    shards = [ShardedBatches(rows, 5, rank=r, world_size=3, seed=1) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    seen = [np.concatenate(list(s)) for s in shards]
    assert all(len(b) == 15 for b in seen)  # 50 // 3 = 16 per worker, 3 full batches of 5
    assert len(np.unique(np.concatenate(seen))) == 45
    assert all((np.diff(b) > 0).all() for s in shards for b in s)  # each batch sorted
    first = list(shards[0])
    shards[0].set_epoch(3)
    assert not all(np.array_equal(a, b) for a, b in zip(first, shards[0]))  # reshuffled


def test_lr_schedule_warms_up_then_decays_to_zero():
    c = TrainConfig(warmup=0.1, max_minutes=0)
    assert lr_factor(0.05, c) == pytest.approx(0.5)
    assert lr_factor(0.1, c) == pytest.approx(1.0)
    assert lr_factor(1.0, c) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(0.5, replace(c, schedule="constant")) == 1.0


def test_bad_settings_are_clear_errors(cache):
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        _train(cache, replace(FAST, batch_size=100))


class _GradNorms(VAEObjective):
    """Records the global gradient norm the optimizer stepped with (after any clipping)."""

    def __init__(self, config):
        super().__init__(config)
        self.norms = []

    def after_step(self, model, loss):
        super().after_step(model, loss)
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_gradient_clipping_bounds_the_step_norm(cache, clip):
    objective = _GradNorms(TINY)
    torch.manual_seed(0)
    fit(VAE(TINY), objective, cache, replace(FAST, epochs=1, grad_clip=clip))
    assert len(objective.norms) == 6
    if clip:
        assert max(objective.norms) <= clip * (1 + 1e-4)
    else:  # unclipped, the summed-pixel loss has norms far above it
        assert min(objective.norms) > 10 * 0.5


class _SlowFirstLook(VAEObjective):
    """Its first validation (of the untrained model) takes 1.5 s."""

    def __init__(self, config):
        super().__init__(config)
        self.looks = 0

    def validate(self, model, batches):
        self.looks += 1
        if self.looks == 1:
            time.sleep(1.5)
        return super().validate(model, batches)


def test_the_time_budget_is_for_training_not_the_first_look_at_the_untrained_model(cache):
    # a 1.2-second budget and a 1.5-second first validation: the budget still buys training steps
    config = replace(FAST, epochs=10_000, max_minutes=0.02)
    torch.manual_seed(0)
    result = fit(VAE(TINY), _SlowFirstLook(TINY), cache, config)
    assert result.step > 0
    assert result.history[-1]["elapsed_s"] >= 0.02 * 60  # and it did end the run
