"""`faceedit train --workers N --address ...` on a real two-node Ray cluster on this machine:
`ray start --head` plus a second `ray start --address` node, each with 1 CPU and a resource of its
own, so the 2 workers must land on different nodes. The cluster is shut down at the end whatever
happens (only the processes these tests started)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from faceedit.bundle import load_bundle
from test_ray_support import (FACEEDIT, SNAPSHOT, TINY_MODEL, LoopbackCluster, kill_tree,
                              process_tree, read_jsonl, wait_for, write_tiny_cache)

EPOCHS, BATCH, REPORT_EVERY = 3, 16, 8
TRAIN, VAL = 1024, 64
STEPS = EPOCHS * (TRAIN // 2 // BATCH)  # 2 workers: 32 steps an epoch
DRIVER_TIMEOUT = 300
# Two Ray nodes started with `ray start`, then whole training runs on them: the slowest tests, kept
# out of the default run (`pytest -m slow` runs them; workers/cluster.py's local Ray is tested in
# the default run by tests/test_ray_train.py).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-cluster")
    c = LoopbackCluster(Path(tmp_path_factory.getbasetemp()) / "rs")
    try:
        c.start_node(1, {"head_node": 1}, tmp / "head.log")
        c.start_node(1, {"second_node": 1}, tmp / "node.log")
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("data") / "cache", TRAIN + VAL, VAL)


def train_command(cluster: LoopbackCluster, cache: Path, out: Path, name: str) -> list[str]:
    return FACEEDIT + ["train", "--cache", str(cache), "--out", str(out), "--workers", "2",
                       "--address", cluster.address, "--storage", str(out.parent / "storage"),
                       "--run-name", name, "--epochs", str(EPOCHS), "--batch-size", str(BATCH),
                       "--report-every", str(REPORT_EVERY), "--lr", "3e-3", "--val-images", str(VAL),
                       "--keep-checkpoints", "0", *TINY_MODEL]


def run_driver(cmd: list[str], env: dict, log: Path) -> None:
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=DRIVER_TIMEOUT)
        finally:
            kill_tree(process_tree(proc.pid), grace=2)
    assert rc == 0, f"faceedit train failed ({rc}):\n{log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def uninterrupted(cluster, cache, tmp_path_factory) -> Path:
    """The bundle of a run on both nodes, never interrupted."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run_driver(train_command(cluster, cache, tmp / "vae", "two-nodes"), cluster.env, tmp / "driver.log")
    return tmp / "vae"


def test_two_nodes_train_and_the_bundle_loads(cluster, uninterrupted):
    out, log_dir = uninterrupted, uninterrupted.with_name("vae-log")
    workers = [json.loads((log_dir / "workers" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len({w["node_id"] for w in workers}) == 2, "one worker on each of the 2 nodes"
    assert all(w["threads"] == 1 and w["world_size"] == 2 for w in workers)

    rows = read_jsonl(log_dir / "metrics.jsonl")
    val = [r for r in rows if "val_total" in r]
    assert [r["epoch"] for r in val] == list(range(EPOCHS + 1))  # epoch 0: before training
    assert val[-1]["val_total"] < val[0]["val_total"]
    assert val[-1]["val_psnr"] > val[0]["val_psnr"] + 1

    bundle = load_bundle(out)
    assert bundle.meta["steps"] == STEPS and bundle.meta["ray"]["workers"] == 2
    assert bundle.meta["ray"]["effective_batch_size"] == 2 * BATCH
    assert bundle.meta["metrics"]["val_total"] == pytest.approx(val[-1]["val_total"])
    x = bundle.model.sample(2)
    assert x.shape == (2, 3, 32, 32)


def test_a_killed_driver_resumes_where_it_stopped(cluster, cache, uninterrupted, tmp_path):
    out, log_dir = tmp_path / "vae", tmp_path / "vae-log"
    cmd = train_command(cluster, cache, out, "resumed")

    # 1. The driver is killed (SIGKILL: no clean-up of its own) after the first checkpoint.
    with (tmp_path / "driver1.log").open("w") as f:
        first = subprocess.Popen(cmd, env=cluster.env, stdout=f, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: (tmp_path / "storage" / "resumed" / SNAPSHOT).is_file() or
                     first.poll() is not None, DRIVER_TIMEOUT, "the first checkpoint")
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            kill_tree(process_tree(first.pid), grace=2)
    before = read_jsonl(log_dir / "metrics.jsonl")
    assert before[-1]["step"] < STEPS, "the run finished before the driver was killed"
    assert not out.exists()

    # 2. The same command again: the run continues from its last checkpoint.
    run_driver(cmd, cluster.env, tmp_path / "driver2.log")
    start = json.loads((log_dir / "workers" / "rank0.json").read_text())["start_step"]
    assert start >= REPORT_EVERY and start % REPORT_EVERY == 0, start
    assert start in {r["step"] for r in before}, "resumed from a step the first driver reported"

    rows = read_jsonl(log_dir / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), "no report twice, none going back"
    assert steps[-1] == STEPS
    assert [r["epoch"] for r in rows if "val_total" in r] == list(range(EPOCHS + 1))
    assert rows[: len([r for r in before if r["step"] <= start])] == [r for r in before if r["step"] <= start]
    resumed, whole = load_bundle(out).meta, load_bundle(uninterrupted).meta
    assert resumed["steps"] == whole["steps"] == STEPS
    # Not bit-identical (rank 1's noise stream is reseeded on resume), but the same training.
    assert resumed["metrics"]["val_psnr"] == pytest.approx(whole["metrics"]["val_psnr"], abs=0.5)
