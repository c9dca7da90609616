"""Distributed training on Ray Train: the library's loop (`faceedit.trainer.fit`) in a
`TorchTrainer`, one process per worker, kept in step by DDP or by local SGD (`--sync-every`).

What it trains is a `faceedit.recipe.Recipe` (a model factory, its objective, what to record after
training): the VAE (`faceedit.objective.VAERecipe`), the judge (`faceedit.judge.JudgeRecipe`) or
any other kind. The driver writes the bundle with `faceedit.recipe.write_bundle`, as the plain loop
(`faceedit.recipe.train_bundle`) does.

As in Ray's torch_fashion_mnist_example, Ray touches the plain PyTorch loop at its seams only:
  - the model:   `ray.train.torch.prepare_model` (DDP; NCCL on GPU, gloo on CPU) via `wrap_model`;
                 with sync_every > 1 it only moves the model to the worker's device, and the
                 loop averages the weights over Ray's process group every sync_every steps
  - the data:    each worker reads its shard of the memory-mapped cache itself (`rank`,
                 `world_size` -> the loop's DistributedSampler-like `ShardedBatches`): no copy of
                 the dataset goes through Ray's object store
  - the report:  `ray.train.report(metrics, checkpoint)` at every epoch end and every K steps
                 (`on_report`); `ray.train.get_checkpoint()` on (re)start (`resume`)
  - the run:     `TorchTrainer(...).fit()` here, in the driver

Ray Train API: V2, the default of the installed Ray 2.60 (RAY_TRAIN_V2_ENABLED unset means 1).
What this module relies on: a driver started again with the same
`RunConfig(name, storage_path)` finds the run's checkpoint-manager snapshot in storage, so
`get_checkpoint()` hands the workers the last checkpoint (resume after a killed driver); a dead
worker makes the controller restart the whole worker group from the last checkpoint,
`FailureConfig(max_failures)` times; `report()` is a barrier of all workers, and only rank 0
passes a checkpoint.

Ray is imported inside functions only, so `faceedit train --help` (which reads `RayConfig`) starts
without loading it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from faceedit.config import config_to_dict
from faceedit.cache import Cache
from faceedit.files import atomic_write_json
from faceedit.recipe import Recipe, write_bundle
from faceedit.trainer import TrainConfig, kept_weights
from workers.cluster import local_object_store_bytes, ray_session

STATE_FILE = "state.pt"  # the loop's checkpoint state dict inside a Ray checkpoint folder
__all__ = ["RayConfig", "RayRun", "default_run_name", "local_object_store_bytes", "plan_placement",
           "train_on_ray", "load_state", "save_state"]


@dataclass(frozen=True)
class RayConfig:
    gpu: Literal["auto", "yes", "no"] = field(default="auto", metadata={
        "help": "auto: one GPU per worker when the cluster has one for every worker, else CPU; "
                "yes: require GPUs (error when the cluster has too few); no: CPU only"})
    address: str = field(default="", metadata={
        "help": "Ray cluster to join (host:port of the head, or auto); empty: $RAY_ADDRESS if set, "
                "else a local Ray just for this run, listening on 127.0.0.1 only"})
    run_name: str = field(default="", metadata={
        "help": "name of the run under --storage; run again with the same name to resume it from "
                "its last checkpoint (empty: the bundle's name plus a hash of cache and settings, "
                "so rerunning an interrupted command resumes it)"})
    storage: str = field(default="runs/ray", metadata={
        "help": "Ray storage_path for checkpoints and logs; on a multi-node cluster a folder every "
                "node sees at the same path (NFS, a shared volume) or a URI such as s3://bucket/x"})
    max_failures: int = field(default=2, metadata={
        "help": "restart the workers from the last checkpoint this many times after a worker "
                "dies (-1: without limit)"})
    keep_checkpoints: int = field(default=3, metadata={
        "help": "checkpoints kept in storage, the most recent ones (0: all)"})
    cpus_per_worker: int = field(default=0, metadata={
        "help": "CPUs reserved per worker, also its torch threads (0: the most every worker gets "
                "on the cluster's nodes, so N workers on N cores do not oversubscribe)"})
    num_cpus: int = field(default=0, metadata={
        "help": "CPUs of the local Ray started without --address (0: all cores of this machine)"})

    def __post_init__(self) -> None:
        if self.gpu not in ("auto", "yes", "no"):
            raise ValueError(f"RayConfig.gpu={self.gpu!r}: expected auto, yes or no")
        for name in ("keep_checkpoints", "cpus_per_worker", "num_cpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"RayConfig.{name}={getattr(self, name)}: expected >= 0")
        if self.max_failures < -1:
            raise ValueError(f"RayConfig.max_failures={self.max_failures}: expected >= -1")


CPU_WORKERS = 2  # the main job's Ray workers without GPUs (2 x 1 thread on 2 cores, BENCHMARKS.md)


@dataclass(frozen=True)
class Placement:
    """How the workers sit on the cluster: the same resources for every worker."""
    workers: int
    use_gpu: bool
    cpus_per_worker: int
    note: str  # why, in words (printed)


@dataclass(frozen=True)
class RayRun:
    bundle: Path
    run_dir: str  # the run's folder in storage (checkpoints, Ray's snapshot)
    log_dir: Path | None  # metrics.jsonl, figures/, workers/rank*.json (rank 0's loop output)
    metrics: dict[str, float]  # the last report (the final validation)
    checkpoints: list[dict[str, float]]  # metrics of the kept checkpoints, oldest first
    placement: Placement


# ---------------------------------------------------------------------------- planning (no Ray)

def plan_placement(nodes: list[dict[str, float]], workers: int | None, gpu: str,
                   cpus_per_worker: int = 0) -> Placement:
    """Resources per worker from the alive nodes' resources ({"CPU": n, "GPU": m, ...} each).

    workers=None: one worker per GPU of the cluster (unless gpu="no"), else CPU_WORKERS CPU workers.
    gpu="auto" never trains on CPU workers beside idle GPUs: given more workers than the cluster
    has GPUs, it runs one GPU worker per GPU instead (and says so in the note).

    With cpus_per_worker = 0 each worker gets the largest CPU count c for which the nodes can hold
    all workers at once (sum over nodes of floor(CPU / c), with GPU workers also limited to one per
    GPU), so 2 workers on 2 cores take 1 core and 1 torch thread each instead of 2 threads each.
    """
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if workers is None:
        workers = gpus if gpus and gpu != "no" else CPU_WORKERS
    if workers < 1:
        raise ValueError(f"workers={workers}: expected >= 1 (0 runs the plain loop without Ray)")
    if gpu == "yes" and gpus < workers:
        raise ValueError(f"--gpu yes: {workers} workers need {workers} GPUs, the cluster has {gpus}")
    asked = workers
    if gpu == "auto" and 0 < gpus < workers:
        workers = gpus
    use_gpu = gpu == "yes" or (gpu == "auto" and gpus > 0)
    note = (f"{workers} GPU worker(s), NCCL" if use_gpu else
            f"CPU workers, gloo ({gpus} GPU(s) in the cluster)")
    if workers < asked:
        note += f" ({asked} asked for, one per GPU instead of CPU workers beside idle GPUs)"

    def fits(c: int) -> bool:
        slots = 0
        for n in nodes:
            k = int(n.get("CPU", 0) // c)
            slots += min(k, int(n.get("GPU", 0))) if use_gpu else k
        return slots >= workers

    if cpus_per_worker:
        return Placement(workers, use_gpu, cpus_per_worker, note)
    most = int(max((n.get("CPU", 0) for n in nodes), default=0))
    best = next((c for c in range(most, 0, -1) if fits(c)), 0)
    if best == 0:
        cpus = int(sum(n.get("CPU", 0) for n in nodes))
        raise ValueError(f"{workers} workers do not fit the cluster: {cpus} CPUs in {len(nodes)} "
                         f"node(s){', ' + str(gpus) + ' GPUs' if use_gpu else ''}; each worker "
                         "needs at least 1 CPU" + (" and 1 GPU" if use_gpu else ""))
    return Placement(workers, use_gpu, best, note)


def default_run_name(out: Path, cache_hash: str, model_config: Any,
                     train_config: TrainConfig, workers: int | None) -> str:
    """`<bundle name>-<8 hex>`: the same command resumes its own run, changed settings start anew."""
    key = json.dumps({"cache": cache_hash, "model": config_to_dict(model_config),
                      "train": dataclasses.asdict(train_config), "workers": workers}, sort_keys=True)
    return f"{out.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------- checkpoints

def save_state(state: dict[str, Any], folder: Path) -> None:
    """The loop's state dict (tensors and plain values) as one file in a checkpoint folder."""
    torch.save(state, folder / STATE_FILE)


def load_state(folder: str | Path) -> dict[str, Any]:
    """Inverse of `save_state`; weights_only: a checkpoint in shared storage executes nothing."""
    file = Path(folder) / STATE_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (not a faceedit Ray checkpoint)")
    return torch.load(file, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------- the driver

def train_on_ray(cache: str | Path, out: str | Path, recipe: Recipe, train_config: TrainConfig,
                 workers: int | None, ray_config: RayConfig = RayConfig(),
                 log_dir: str | Path | None = None, meta: dict[str, Any] | None = None) -> RayRun:
    """Train the recipe's model on the cache's train split with `workers` Ray workers (None: one
    per GPU, else 2 on CPU; see `plan_placement`) and write its bundle to `out` (atomically).
    `train_config.batch_size` is per worker: the effective batch is workers x batch_size; the
    learning rate is used as given.

    Joins the cluster of `ray_config.address` (or $RAY_ADDRESS), else starts a local Ray and shuts
    it down at the end, whatever happens (workers/cluster.py). A run of the same name in
    `ray_config.storage` resumes from its last checkpoint. `log_dir` (default:
    <storage>/<run>/log for local storage) receives rank 0's metrics.jsonl and figures; `meta` is
    added to the bundle's config.json.
    """
    import ray

    cache_obj = Cache.open(cache)  # fail here, before Ray starts, on a bad cache
    recipe.check(cache_obj)
    out = Path(out)
    name = ray_config.run_name or default_run_name(out, cache_obj.hash, recipe.config,
                                                   train_config, workers)
    storage = _storage_path(ray_config.storage)
    if log_dir is None and "://" not in storage:
        log_dir = Path(storage) / name / "log"
    with ray_session(ray_config.address, ray_config.num_cpus):
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        placement = plan_placement(nodes, workers, ray_config.gpu, ray_config.cpus_per_worker)
        spec = {"cache": str(Path(cache).resolve()), "recipe": recipe, "train": train_config,
                "threads": placement.cpus_per_worker,
                "log_dir": str(Path(log_dir).resolve()) if log_dir is not None else None}
        sync = (f"local SGD, weights averaged every {train_config.sync_every} steps"
                if train_config.sync_every > 1 else "DDP")
        _say(f"ray: run {name!r} in {storage}; {placement.note}; {placement.workers} x batch "
             f"{train_config.batch_size} = effective batch {placement.workers * train_config.batch_size}, "
             f"peak lr {train_config.lr:g} (AdamW, {train_config.schedule}, {sync}); "
             f"{placement.cpus_per_worker} CPU(s) and torch thread(s) per worker")
        result = _fit(spec, placement, ray_config, name, storage)
    return _write_bundle(result, out, recipe, train_config, cache_obj, placement, name,
                         log_dir, meta)


def _storage_path(storage: str) -> str:
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def scaling(placement: Placement):
    """Ray Train's ScalingConfig and TorchConfig for a placement: one GPU per GPU worker, NCCL
    between GPU workers, gloo between CPU workers."""
    import ray.train
    from ray.train.torch import TorchConfig

    return (ray.train.ScalingConfig(
                num_workers=placement.workers, use_gpu=placement.use_gpu,
                resources_per_worker={"CPU": placement.cpus_per_worker,
                                      **({"GPU": 1} if placement.use_gpu else {})}),
            TorchConfig(backend="nccl" if placement.use_gpu else "gloo"))


def _start_autoscaling_coordinator(timeout_s: float = 120.0) -> None:
    """Start Ray's autoscaling-coordinator actor and wait until it answers.

    Ray Train 2.60's controller registers the workers' resources with that actor, starting it on
    first use, and gives each request 5 s; starting an actor on a busy machine takes longer (on
    the 2-core CPU and on the H200 alike), and each timeout prints a traceback that is harmless
    (nothing here autoscales) but reads like a failure. Started here first, it answers in time.
    A Ray without that actor (another version) is left alone, and a failure here only costs the
    traceback this avoids: Ray Train starts the actor itself."""
    import ray

    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator)
    except ImportError:
        return
    try:
        ray.get(get_or_create_autoscaling_coordinator().__ray_ready__.remote(), timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - best effort, see above
        _say(f"ray: Ray Train's autoscaling coordinator did not start in {timeout_s:g} s ({e!r}); "
             "training goes on, Ray Train may print a harmless traceback about it")


def _fit(spec: dict[str, Any], placement: Placement, config: RayConfig, name: str, storage: str):
    import ray.train
    from ray.train.torch import TorchTrainer

    _start_autoscaling_coordinator()
    scaling_config, torch_config = scaling(placement)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=spec,
        scaling_config=scaling_config,
        torch_config=torch_config,
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints or None),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    return trainer.fit()


def _write_bundle(result, out: Path, recipe: Recipe, train_config: TrainConfig, cache: Cache,
                  placement: Placement, name: str, log_dir, meta) -> RayRun:
    """The model bundle from the run's last checkpoint (written by the driver: the checkpoint in
    storage is how the weights travel from the workers)."""
    if result.checkpoint is None:
        raise RuntimeError(f"Ray run {name!r} ended without a checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as folder:
        state = load_state(folder)
    model = recipe.build()
    weights, best = kept_weights(state)  # the best validation's weights (TrainConfig.keep)
    model.load_state_dict(weights)
    model.eval()
    metrics = {k: v for k, v in (best or result.metrics).items() if isinstance(v, (int, float))}
    ray_record = {"run": name, "path": result.path, "workers": placement.workers,
                  "gpu": placement.use_gpu, "cpus_per_worker": placement.cpus_per_worker,
                  "effective_batch_size": placement.workers * train_config.batch_size}
    write_bundle(out, recipe, model, cache, train_config, metrics=metrics, steps=int(state["step"]),
                 log_dir=log_dir, meta={"ray": ray_record, **(meta or {})})
    checkpoints = [m for _, m in result.best_checkpoints]
    checkpoints.sort(key=lambda m: m.get("step", 0))
    _say(f"ray: bundle {out} (step {state['step']}, epoch {state['epoch']})")
    return RayRun(out, result.path, Path(log_dir) if log_dir else None, metrics, checkpoints,
                  placement)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- the workers

def _train_worker(spec: dict[str, Any]) -> None:
    """One Ray Train worker: the library's loop, with Ray at its seams."""
    import ray.train
    import ray.train.torch

    from faceedit.trainer import fit

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _quiet_report_log()
    torch.set_num_threads(spec["threads"])
    # The tqdm bar does not survive Ray's line-based log forwarding: rank 0 prints lines instead.
    config = dataclasses.replace(spec["train"], progress=False, threads=spec["threads"])
    recipe: Recipe = spec["recipe"]
    torch.manual_seed(config.seed)  # the same initial weights as the plain loop (DDP syncs them)
    model = recipe.build()
    checkpoint = ray.train.get_checkpoint()  # Ray: the last checkpoint of this run, if any
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_state(folder)
    log_dir = Path(spec["log_dir"]) if spec["log_dir"] else None
    _announce(log_dir, rank, world, resume)
    fit(model, recipe.objective(), Cache.open(spec["cache"]), config, log_dir,
        rank=rank, world_size=world,
        wrap_model=_wrapper(config),
        on_report=_Reporter(rank, world, config, resume),
        resume=resume, device=ray.train.torch.get_device())


def _wrapper(config: TrainConfig):
    """Ray's prepare_model: DDP on this worker's device, or (local SGD, sync_every > 1) the bare
    model on its device: the loop then averages the weights itself every sync_every steps."""
    import ray.train.torch

    if config.sync_every > 1:
        return lambda model: ray.train.torch.prepare_model(model, parallel_strategy=None)
    return ray.train.torch.prepare_model


def _quiet_report_log() -> None:
    """Drop Ray Train's INFO line per report and worker (it logs to a logger named by its file
    path, a child of root, so `LoggingConfig(log_level)` does not reach it)."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _announce(log_dir: Path | None, rank: int, world: int, resume: dict | None) -> None:
    """workers/rank<r>.json: where this worker runs (pid, node, host), rewritten on each (re)start."""
    import ray

    info = {"rank": rank, "world_size": world, "pid": os.getpid(), "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(), "threads": torch.get_num_threads(),
            "start_step": resume["step"] if resume else 0, "time": time.time()}
    if log_dir is not None:
        atomic_write_json(log_dir / "workers" / f"rank{rank}.json", info)
    if rank == 0 and resume:
        _say(f"resuming from the checkpoint at step {resume['step']}: epoch {resume['epoch'] + 1}, "
             f"batch {resume['epoch_step'] + 1} next")


class _Reporter:
    """`on_report` of the loop: sums images/s and averages train loss terms over the workers,
    saves rank 0's state as the checkpoint, reports to Ray, prints rank 0's progress line."""

    def __init__(self, rank: int, world: int, config: TrainConfig, resume: dict | None):
        self.rank, self.world, self.config = rank, world, config
        self.t0, self.step0 = time.perf_counter(), resume["step"] if resume else 0

    def __call__(self, metrics: dict[str, float], state: dict[str, Any]) -> None:
        import ray.train

        metrics = {**metrics, **self._reduced(metrics), "world_size": self.world,
                   "effective_batch_size": self.world * self.config.batch_size}
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if self.rank == 0:  # one copy of the (replicated) DDP state is enough
                save_state(state, Path(folder))
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            # Ray: a barrier across workers; persists the checkpoint to storage and registers it
            ray.train.report(metrics, checkpoint=checkpoint,
                             checkpoint_dir_name=f"checkpoint_step{state['step']:08d}")
        if self.rank == 0 and "val_total" in metrics:
            _say(self._line(metrics, state))

    def _reduced(self, metrics: dict[str, float]) -> dict[str, float]:
        """images/s summed, train_* means averaged over the workers (every rank calls this)."""
        import torch.distributed as dist

        keys = ["images_per_s"] + sorted(k for k in metrics if k.startswith("train_"))
        if self.world == 1 or not dist.is_initialized():
            return {k: metrics[k] for k in keys}
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        values = values.cpu().tolist()
        return {k: v if k == "images_per_s" else v / self.world for k, v in zip(keys, values)}

    def _line(self, m: dict[str, float], state: dict[str, Any]) -> str:
        total = state["scheduler"]["total_steps"]
        done = m["step"] - self.step0
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - m["step"]) / rate if rate > 0 else float("inf")
        if self.config.max_minutes:
            eta = min(eta, max(60 * self.config.max_minutes - m["elapsed_s"], 0.0))
        terms = " ".join(f"{k[6:]} {v:.4g}" for k, v in m.items()
                         if k.startswith("train_") and k != "train_log_sigma")
        val = " ".join(f"{k[4:]} {m[k]:.4g}" for k in ("val_total", "val_psnr", "val_bpd") if k in m)
        return (f"epoch {m['epoch']:.2f}/{self.config.epochs} step {m['step']}/{total} | train "
                f"{terms} | val {val} | {m['images_per_s']:.0f} img/s over {self.world} "
                f"worker(s) | ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
