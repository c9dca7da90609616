"""The feeds give the same batches; the GPU-shaped loop (resident data, deferred loss read-back,
best-val weights, sparse validation) trains as the per-step CPU loop does. All on the CPU."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from faceedit.bundle import weights_digest
from faceedit.cache import Cache
from faceedit.feed import HostFeed, PrefetchFeed, ResidentFeed, Step, make_feed
from faceedit.model import VAE
from faceedit.objective import VAEObjective
from faceedit.trainer import NonFiniteLoss, ShardedBatches, fit, kept_weights
from tests.test_trainer import FAST, TINY, _Exploding, make_cache

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache.open(make_cache(tmp_path_factory.mktemp("cache"), n=64, val=16, seed=3))


def _plan(cache: Cache, batch: int = 8, flips: bool = True) -> list[Step]:
    rows = cache.indices("train")
    return [Step(r, 1000 + i if flips else None)
            for i, r in enumerate(ShardedBatches(rows, batch, seed=5))]


@pytest.mark.parametrize("channels_last", [True, False])
def test_every_feed_gives_the_same_batches(cache, channels_last):
    plan = _plan(cache)
    rows = cache.indices("train")
    host = list(HostFeed(cache, CPU, channels_last).epoch(plan))
    resident = list(ResidentFeed(cache, rows, CPU, channels_last).epoch(plan))
    prefetched = list(PrefetchFeed(cache, CPU, channels_last, depth=2).epoch(plan))
    assert len(host) == len(resident) == len(prefetched) == len(plan) == 6
    flipped = 0
    for h, r, p, step in zip(host, resident, prefetched, plan):
        for other in (r, p):
            assert torch.equal(h.images, other.images) and torch.equal(h.labels, other.labels)
            assert other.images.is_contiguous(memory_format=torch.channels_last) == channels_last
        plain = torch.from_numpy(cache.images[step.rows]).float() / 255
        same = (h.images == plain).flatten(1).all(1)
        mirrored = (h.images == plain.flip(-1)).flatten(1).all(1)
        assert bool((same | mirrored).all())  # each image as it is or mirrored, nothing else
        flipped += int((mirrored & ~same).sum())
    assert 0 < flipped < 48  # about half of the 48 images were mirrored


def test_no_flips_and_a_short_last_batch(cache):
    rows = cache.indices("train")
    plan = [Step(r, None) for r in ShardedBatches(rows, 10, seed=0, drop_last=False)]
    assert [len(s.rows) for s in plan] == [10, 10, 10, 10, 8]
    resident = list(ResidentFeed(cache, rows, CPU, True).epoch(plan))
    for batch, step in zip(resident, plan):
        assert torch.equal(batch.images, torch.from_numpy(cache.images[step.rows]).float() / 255)


def test_resident_feed_refuses_rows_it_does_not_hold(cache):
    feed = ResidentFeed(cache, cache.indices("train"), CPU, True)
    with pytest.raises(ValueError, match="not resident"):
        list(feed.epoch([Step(cache.indices("val")[:4], None)]))


def test_prefetch_stops_cleanly_and_passes_on_errors(cache):
    feed = PrefetchFeed(cache, CPU, True, depth=1)
    it = feed.epoch(_plan(cache))
    next(it)
    it.close()  # the loop stopped early (time budget): the reader thread is joined
    bad = [Step(np.array([0, 10_000]), None)]  # a row past the end of the cache
    with pytest.raises(IndexError):
        list(feed.epoch(bad))


def test_auto_feed_is_the_host_reader_on_cpu(cache):
    assert isinstance(make_feed("auto", cache, cache.indices("train"), CPU, True), HostFeed)
    with pytest.raises(ValueError, match="feed 'disk'"):
        make_feed("disk", cache, cache.indices("train"), CPU, True)


def _train(cache, config, objective=None, **seams):
    torch.manual_seed(config.seed)
    return fit(VAE(TINY), objective or VAEObjective(TINY), cache, config, **seams)


def test_resident_and_prefetch_loops_train_exactly_as_the_host_loop(cache):
    config = replace(FAST, epochs=2, keep="last")
    digests = {kind: weights_digest(_train(cache, replace(config, feed=kind)).model)
               for kind in ("host", "resident", "prefetch")}
    assert len(set(digests.values())) == 1, digests


def test_deferred_check_still_names_the_step(cache):
    objective = _Exploding(TINY, at_step=6)
    with pytest.raises(NonFiniteLoss, match=r"step 6 \(epoch 1, batch 6\).*nan"):
        _train(cache, replace(FAST, check_every=4, epochs=3, val_every=3), objective)
    assert objective.calls == 8  # found at the next read-back, 2 steps later


def test_train_means_are_the_same_with_deferred_read_back(cache):
    a = _train(cache, replace(FAST, check_every=1, keep="last")).history
    b = _train(cache, replace(FAST, check_every=5, keep="last")).history
    for x, y in zip(a, b):
        for k in x:
            if k.startswith(("train_", "val_")):
                assert x[k] == pytest.approx(y[k], rel=1e-9), k


class _WorseLater(VAEObjective):
    """A validation metric that is best at epoch 2 and worse after it."""
    select = ("score", "max")

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def validate(self, model, batches):
        out = super().validate(model, batches)
        self.calls += 1  # call 1: before training; call k + 1: after epoch k
        return {**out, "score": -abs(self.calls - 3)}


def test_keep_best_returns_the_best_validation_weights_and_checkpoints_carry_them(cache, tmp_path):
    reports = []
    result = _train(cache, replace(FAST, epochs=4), _WorseLater(TINY), out_dir=tmp_path,
                    on_report=lambda m, s: reports.append((m, s)))
    at_epoch2 = next(s for m, s in reports if m.get("epoch") == 2 and "val_score" in m)
    assert weights_digest(result.model) == weights_digest(_loaded(at_epoch2["model"]))
    assert result.metrics["kept_best_of_step"] == 12 and result.metrics["val_score"] == 0
    final_state = reports[-1][1]
    assert final_state["step"] == 24
    weights, metrics = kept_weights(final_state)  # what a bundle written from a checkpoint takes
    assert weights_digest(_loaded(weights)) == weights_digest(result.model)
    assert metrics["kept_best_of_step"] == 12
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # the log has one line per report, none added
    last = _train(cache, replace(FAST, epochs=4, keep="last"), _WorseLater(TINY))
    assert weights_digest(last.model) != weights_digest(result.model)
    assert "kept_best_of_step" not in last.metrics


def _loaded(weights):
    model = VAE(TINY)
    model.load_state_dict(weights)
    return model


def test_validation_every_k_epochs_and_after_the_last(cache):
    result = _train(cache, replace(FAST, epochs=5, val_every=2))
    validated = [h["epoch"] for h in result.history if "val_psnr" in h]
    assert validated == [0, 2, 4, 5]


def test_prefetch_reader_that_fails_after_the_loop_left_does_not_hang_it(cache):
    import threading
    import time

    plan = _plan(cache)[:2] + [Step(np.array([0, 10_000]), None)]  # the third step fails
    it = PrefetchFeed(cache, CPU, True, depth=1).epoch(plan)
    next(it)
    time.sleep(0.5)  # the reader fills the queue, then fails with nowhere to put its error
    closer = threading.Thread(target=it.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
