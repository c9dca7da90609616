"""`workers.train.train_on_ray` on a local Ray it starts itself (no address): 2 workers, one of
them killed with SIGKILL in the middle of an epoch; with max_failures=1 the run goes on from its
last checkpoint and ends with every step and epoch counted once."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

from faceedit.bundle import load_bundle
from faceedit.model import VAEConfig
from faceedit.trainer import TrainConfig
from test_ray_support import FAST_RAY_ENV, SNAPSHOT, last_step, read_jsonl, wait_for, write_tiny_cache
from workers.train import RayConfig, train_on_ray

TRAIN, VAL, BATCH, EPOCHS, EVERY = 2240, 64, 16, 2, 16
PER_EPOCH = TRAIN // 2 // BATCH  # 70 steps an epoch with 2 workers


def expected_reports() -> list[int]:
    """Steps the loop reports at: every EVERY steps, and each epoch end."""
    ends = {PER_EPOCH * e for e in range(1, EPOCHS + 1)}
    return sorted(ends | set(range(EVERY, EPOCHS * PER_EPOCH, EVERY)))


def test_a_worker_killed_mid_epoch_resumes_from_the_last_checkpoint(tmp_path, monkeypatch):
    for key, value in FAST_RAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cache = write_tiny_cache(tmp_path / "cache", TRAIN + VAL, VAL)
    log_dir = tmp_path / "log"
    killed: dict = {}

    def kill_rank1_after_first_checkpoint() -> None:
        # Ray registers a checkpoint (then writes its snapshot) after the loop logs its step
        wait_for(lambda: (tmp_path / "storage" / "ft" / SNAPSHOT).is_file(), 240, "the first checkpoint")
        step = last_step(log_dir / "metrics.jsonl")
        info = json.loads((log_dir / "workers" / "rank1.json").read_text())
        os.kill(info["pid"], signal.SIGKILL)  # the real thing: no Python-level clean-up
        killed.update(info, at_step=step)

    killer = threading.Thread(target=kill_rank1_after_first_checkpoint, daemon=True)
    killer.start()
    run = train_on_ray(cache, tmp_path / "vae", VAEConfig(image_size=32, latent_dim=8, channels=(8, 16), blocks=0, groups=4),
                       TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=3e-3, report_every=EVERY, val_images=VAL),
                       workers=2, ray_config=RayConfig(storage=str(tmp_path / "storage"), run_name="ft",
                                                       max_failures=1, keep_checkpoints=0),
                       log_dir=log_dir)
    killer.join(timeout=5)
    assert killed, "the worker was never killed"
    assert killed["at_step"] < PER_EPOCH, "killed in the first epoch, after its first checkpoint"

    restarted = json.loads((log_dir / "workers" / "rank1.json").read_text())
    assert restarted["pid"] != killed["pid"]
    start = restarted["start_step"]
    # From the last checkpoint Ray had registered, not from scratch. The loop logs a report's step
    # just before Ray registers its checkpoint, so that may trail the last logged step (a CI run
    # killed at logged step 32 resumed from 16), but it is one of the reports, and mid-epoch.
    assert start in expected_reports() and 0 < start <= killed["at_step"] + EVERY, f"resumed at {start}"
    assert start % PER_EPOCH != 0, f"resumed mid-epoch, at {start}"

    # Ray's record of checkpoints (across both worker groups) and the loop's log: each step once.
    assert [m["step"] for m in run.checkpoints] == expected_reports()
    rows = read_jsonl(log_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0] + expected_reports()
    assert [r["epoch"] for r in rows if "val_total" in r] == list(range(EPOCHS + 1))
    assert rows[-1]["val_total"] < rows[0]["val_total"]
    assert run.metrics["step"] == EPOCHS * PER_EPOCH and run.metrics["images_per_s"] > 0

    bundle = load_bundle(run.bundle)
    assert bundle.meta["steps"] == EPOCHS * PER_EPOCH
    assert bundle.model.reconstruct(bundle.model.sample(2)).shape == (2, 3, 32, 32)

