"""A model-agnostic training loop over a dataset cache (in the spirit of minGPT's trainer.py: nothing
in this file knows it trains a VAE; the audit's attribute classifier is trained with it too).

What a model family supplies is an `Objective`: its loss on a batch, its validation metrics and its
figures. The loop supplies AdamW, an optional learning-rate schedule (linear warmup then cosine
decay, Loshchilov & Hutter 2017), bf16 autocast on GPU, channels_last, gradient clipping, a stop
with the step number on a non-finite loss, random horizontal flips, batches fed by faceedit/feed.py
(read from the memory-mapped cache on the CPU; resident on a GPU), the best validation's weights
(TrainConfig.keep), a progress bar, a JSON-lines metrics log and PNG figures.

Nothing in a step waits for the device: the loss terms stay on it and are read back every
`check_every` steps (every step on the CPU), where a non-finite loss stops the run naming its step
and, distributed with a time budget, where the ranks agree on the time.

Seams for distributed training (workers/train.py wraps `fit` in Ray Train; Ray is imported there,
never here):
  wrap_model(model) -> model   e.g. DDP or ray.train.torch.prepare_model; the loss goes through the
                               wrapped model's forward, validation and figures use the bare model.
                               With TrainConfig.sync_every = K > 1 the wrapper must not be DDP: the
                               loop itself averages the weights over torch.distributed every K
                               steps and before every report (local SGD)
  rank, world_size             each worker reads its own shard of the train rows (`ShardedBatches`,
                               DistributedSampler-like, with set_epoch); only rank 0 validates,
                               writes files and shows progress
  on_report(metrics, state)    called on every rank at each epoch end and every `report_every`
                               steps: metrics (floats) and a checkpoint state dict (`TrainState`)
  resume                       a state dict from on_report: the run continues at its step, epoch,
                               position in the epoch, optimizer, schedule and RNG streams
  device                       e.g. ray.train.torch.get_device(); default from TrainConfig.device
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from faceedit.cache import Cache
from faceedit.feed import Batch, FeedKind, Step, make_feed, read_batch  # noqa: F401 (Batch, read_batch: API)
from faceedit.figures import save_png
from faceedit.files import atomic_write_bytes, atomic_write_text

Schedule = Literal["cosine", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=30, metadata={"help": "passes over the train split (the time budget "
                        "may stop earlier)"})
    max_minutes: float = field(default=8.0, metadata={"help": "wall-clock budget in minutes (0: none). "
                               "With a budget the LR schedule follows elapsed time, so it still "
                               "anneals to the end; runs are then not bit-reproducible"})
    batch_size: int = field(default=32, metadata={"help": "images per step per worker. At a fixed "
                            "CPU budget more, smaller steps win (BENCHMARKS.md, Reconstruction "
                            "quality; the main job runs 2 Ray workers x 16)"})
    lr: float = field(default=2e-3, metadata={"help": "peak AdamW learning rate"})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW decoupled weight decay"})
    schedule: Schedule = field(default="cosine", metadata={"help": "cosine: linear warmup then cosine "
                               "decay to 0; constant: lr throughout"})
    warmup: float = field(default=0.03, metadata={"help": "fraction of training spent warming up"})
    grad_clip: float = field(default=0.0, metadata={"help": "max global gradient norm (0: off). Off "
                             "by default: the VAE's summed-pixel loss has norms far above 1, and clipping "
                             "at 1 cost val PSNR (BENCHMARKS.md; Adam rescales steps anyway)"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flips of train images"})
    seed: int = field(default=0, metadata={"help": "seed of weights, shuffling, flips and noise"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if present), cpu, cuda, cuda:1"})
    precision: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata={
        "help": "auto: bf16 autocast on GPU and on CPUs with native bf16 (AVX512-BF16 or AMX; "
                "the speed-up: BENCHMARKS.md, Training throughput), else fp32"})
    channels_last: bool = field(default=True, metadata={"help": "NHWC memory format for images and "
                                "conv weights (faster on GPU, and on CPUs with oneDNN)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave torch's choice)"})
    report_every: int = field(default=0, metadata={"help": "also report/checkpoint every K steps (0: "
                              "epoch ends only)"})
    sync_every: int = field(default=1, metadata={"help": "distributed runs: 1 all-reduces the "
                            "gradients every step (DDP); K > 1 lets each worker take K steps on its "
                            "own, then averages the weights (local SGD, Lin et al. 2020): 1/K of "
                            "the communication"})
    val_images: int = field(default=0, metadata={"help": "validate on the first N val images (0: all)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (rank 0)"})
    val_every: int = field(default=1, metadata={"help": "validate, report and checkpoint every K "
                           "epochs (and after the last step). GPU epochs are short: validating "
                           "each one can cost more than the training"})
    keep: Literal["best", "last"] = field(default="best", metadata={"help": "weights the run "
                                          "returns (and writes to the bundle): best: those of the "
                                          "best validation (the objective's selection metric, "
                                          "e.g. val PSNR); last: those after the last step"})
    feed: FeedKind = field(default="auto", metadata={"help": "how batches reach the device: "
                           "auto (resident on a GPU when the train split fits in half its free "
                           "memory, else prefetch; host on the CPU), host (read on the CPU each "
                           "step), resident (the split on the device as uint8), prefetch (a "
                           "background thread uploading from pinned memory)"})
    check_every: int = field(default=0, metadata={"help": "read the loss back, and stop on a "
                             "non-finite one naming its step, every K steps (0: every step on the "
                             "CPU, every 16 on a GPU, where each read-back stalls the pipeline)"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model for the "
                          "training steps (slow to start; see BENCHMARKS.md for what it gains)"})

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "sync_every", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}: expected >= 1")
        if self.check_every < 0:
            raise ValueError(f"TrainConfig.check_every={self.check_every}: expected >= 0")
        if self.keep not in ("best", "last"):
            raise ValueError(f"TrainConfig.keep={self.keep!r}: expected best or last")
        if self.lr <= 0 or not 0 <= self.warmup < 1 or self.max_minutes < 0:
            raise ValueError(f"TrainConfig: lr={self.lr}, warmup={self.warmup}, max_minutes="
                             f"{self.max_minutes}: expected lr > 0, 0 <= warmup < 1, max_minutes >= 0")


class Loss(Protocol):
    """What an objective's loss returns: `total` is minimized; every field is logged."""
    total: torch.Tensor

    def _asdict(self) -> dict[str, torch.Tensor]: ...  # NamedTuples have it


class Objective(Protocol):
    """A model family's part of training."""

    def loss(self, model: nn.Module, batch: Batch) -> Loss:
        """The training loss on a batch through `model` (possibly wrapped: call its forward)."""

    def validate(self, model: nn.Module, batches: Iterator[Batch]) -> dict[str, float]:
        """Metrics over the validation batches (bare model, eval mode, no grad)."""

    def figures(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """name -> image grid (3, H, W) in [0, 1], saved as PNG (bare model, eval mode, no grad)."""

    def after_step(self, model: nn.Module, loss: Loss) -> None:
        """Optional: called after each optimizer step (bare model), e.g. to update running buffers."""

    # Optional attribute `select = (metric, "max" | "min")`: the validation metric (a key of
    # `validate`'s result) whose best value picks the weights kept with TrainConfig.keep="best";
    # without it, the lowest "total".

    def records(self, model: nn.Module, batches: Iterator[Batch]) -> dict[str, np.ndarray]:
        """Optional: name -> array kept at every validation as records/NAME_eNNN.npy (rank 0, bare
        model, eval mode, no grad), e.g. the codes of fixed val faces; `batches` are the val
        batches in order, so the first images are the same every epoch."""


Report = Callable[[dict[str, float], dict[str, Any]], None]


@dataclass
class TrainResult:
    model: nn.Module  # the bare (unwrapped) model, trained, on its device
    metrics: dict[str, float]  # the last validation (rank 0) or train metrics
    step: int
    epoch: float
    history: list[dict[str, float]]


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite: the run stops, naming the step."""


class ShardedBatches:
    """Row numbers of a cache, cut into batches, for one worker of `world_size`.

    Like torch's DistributedSampler: every epoch one permutation seeded by (seed, epoch), the same
    on every worker; worker `rank` takes every world_size-th row of it, so the shards are disjoint
    and equal in size (a remainder of fewer than world_size rows is left out of that epoch). Each
    batch is sorted so the memory-mapped cache is read front to back in one fancy-index copy.
    `drop_last` drops a short final batch (training: every worker takes the same number of steps).
    """

    def __init__(self, rows: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.drop_last, self.epoch = seed, shuffle, drop_last, 0
        self.shard_size = len(self.rows) // world_size
        if drop_last and self.shard_size < batch_size:
            raise ValueError(f"{len(self.rows)} rows over {world_size} worker(s) give {self.shard_size} "
                             f"per worker, fewer than one batch of {batch_size}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n, b = self.shard_size, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[np.ndarray]:
        rows = self.rows
        if self.shuffle:
            rows = rows[np.random.default_rng([self.seed, self.epoch]).permutation(len(rows))]
        shard = rows[self.rank: self.shard_size * self.world_size: self.world_size]
        for i in range(len(self)):
            yield np.sort(shard[i * self.batch_size: (i + 1) * self.batch_size])


def lr_factor(progress: float, config: TrainConfig) -> float:
    """Multiplier of the peak lr at `progress` in [0, 1]: linear warmup, then cosine decay to 0."""
    if config.schedule == "constant":
        return 1.0
    if progress < config.warmup:
        return max(progress / config.warmup, 1e-3)
    t = min((progress - config.warmup) / (1 - config.warmup), 1.0)
    return 0.5 * (1 + math.cos(math.pi * t))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (else oneDNN emulates it, slower than fp32)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG streams the loop draws from (reparameterization noise, dropout)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass(frozen=True)
class Seams:
    """Where a distributed runner plugs into the loop (see the module docstring); the defaults run
    the plain loop in this process."""
    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] | None = None
    on_report: Report | None = None
    resume: dict[str, Any] | None = None
    device: torch.device | None = None


def fit(model: nn.Module, objective: Objective, cache: Cache, config: TrainConfig,
        out_dir: str | Path | None = None, *, rank: int = 0, world_size: int = 1,
        wrap_model: Callable[[nn.Module], nn.Module] | None = None, on_report: Report | None = None,
        resume: dict[str, Any] | None = None, device: torch.device | None = None) -> TrainResult:
    """Train `model` on the cache's train split; validate on its val split after every epoch.

    out_dir (rank 0 only): metrics.jsonl (one JSON object per report) and figures/NAME_eNNN.png
    (epoch 0 = before training). See the module docstring for the distributed seams. Returns the
    bare model (trained, on its device), the last metrics, the step count and the history.
    """
    seams = Seams(rank=rank, world_size=world_size, wrap_model=wrap_model, on_report=on_report,
                  resume=resume, device=device)
    return _Loop(model, objective, cache, config, out_dir, seams).run()


class _Loop:
    def __init__(self, model: nn.Module, objective: Objective, cache: Cache, config: TrainConfig,
                 out_dir: str | Path | None, seams: Seams):
        rank, world_size, wrap_model = seams.rank, seams.world_size, seams.wrap_model
        on_report, resume, device = seams.on_report, seams.resume, seams.device
        self.objective, self.cache, self.config = objective, cache, config
        self.rank, self.world_size, self.on_report = rank, world_size, on_report
        self.main = rank == 0
        self.out = Path(out_dir) if out_dir is not None and self.main else None
        self.device = device or resolve_device(config.device)
        on_gpu = self.device.type == "cuda"
        self.channels_last = config.channels_last
        bf16 = config.precision == "bf16" or (config.precision == "auto" and (on_gpu or cpu_has_bf16()))
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16
                         else contextlib.nullcontext())
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed + rank)
        self.model = model.to(self.device)
        if on_gpu:  # fixed shapes: let cuDNN time its algorithms once and keep the fastest
            torch.backends.cudnn.benchmark = True
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if resume is not None:
            self.model.load_state_dict(resume["model"])
        self.wrapped = wrap_model(self.model) if wrap_model is not None else self.model
        if config.compile:  # the training forward only; validation and figures use the bare model
            self.wrapped = torch.compile(self.wrapped)
        self.local_sgd = (config.sync_every > 1 and world_size > 1
                          and torch.distributed.is_available() and torch.distributed.is_initialized())
        if self.local_sgd:
            if isinstance(self.wrapped, nn.parallel.DistributedDataParallel):
                raise ValueError(f"TrainConfig.sync_every={config.sync_every} (local SGD) with a "
                                 "DDP-wrapped model: pass a wrap_model that does not add DDP")
            average_weights(self.model)  # the same start everywhere (DDP would broadcast it)
        # fused: one kernel over all parameters instead of ~10 ops per tensor (the same update,
        # faster: bench/bench_train.py; BENCHMARKS.md, Training throughput)
        self.optimizer = torch.optim.AdamW(self.wrapped.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.batches = ShardedBatches(cache.indices("train"), config.batch_size, rank, world_size,
                                      config.seed)
        self.total_steps = config.epochs * len(self.batches)
        self.feed = make_feed(config.feed, cache, self.batches.rows, self.device, self.channels_last)
        self.check_every = config.check_every or (16 if on_gpu else 1)
        self.select = getattr(objective, "select", ("total", "min"))
        self.step = self.epoch = self.epoch_step = 0
        self.elapsed_before = 0.0
        self.shared_clock = (config.max_minutes > 0 and world_size > 1 and torch.distributed.is_available()
                             and torch.distributed.is_initialized())
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None  # {"model": state dict, "metrics": ...} of keep="best"
        if resume is not None:
            self._load(resume)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """The checkpoint: everything needed to continue exactly here (tensors and plain values),
        a copy on the CPU: training on does not change it."""
        return _copy_to_cpu({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"elapsed_s": self.elapsed(), "total_steps": self.total_steps},
            "epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step,
            "rng": rng_state(self.device),
            "config": asdict(self.config),
            "history": list(self.history),
            "best": self.best,
        })

    def _load(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.elapsed_before = float(state["scheduler"]["elapsed_s"])
        self.history = list(state.get("history", []))
        best = state.get("best")
        self.best = None if best is None else {
            "model": {k: v.to(self.device) for k, v in best["model"].items()}, "metrics": best["metrics"]}
        if self.rank == 0:
            set_rng_state(state["rng"], self.device)
        else:  # the checkpoint holds rank 0's streams; other ranks get their own, still seeded
            torch.manual_seed(hash((self.config.seed, self.rank, self.step)) % 2**62)

    def _clock(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.start)

    def elapsed(self) -> float:
        """Seconds of training so far (resumed runs included). Distributed with a time budget: rank
        0's clock as of the ranks' last agreement (`_agree_on_time`), so that they stop at the same
        step (else one waits for the other in the next collective: a hang) and their time-based
        learning rates stay equal."""
        return self._agreed if self.shared_clock else self._clock()

    def _agree_on_time(self) -> None:
        """Every rank takes rank 0's clock. A broadcast waits for the device, so the loop calls this
        only where it waits anyway: every check_every steps (the loss read-back) and at reports."""
        if self.shared_clock:
            self._agreed = self._rank0_value(self._clock())

    def _rank0_value(self, value: float) -> float:
        """Rank 0's `value` on every rank (a broadcast; `value` itself when not distributed)."""
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return value
        nccl = torch.distributed.get_backend() == "nccl"
        t = torch.tensor([value], dtype=torch.float64, device=self.device if nccl else "cpu")
        torch.distributed.broadcast(t, src=0)
        return float(t)

    def out_of_time(self) -> bool:
        return self.config.max_minutes > 0 and self.elapsed() >= 60 * self.config.max_minutes

    def progress(self) -> float:
        p = self.step / max(self.total_steps, 1)
        if self.config.max_minutes > 0:
            p = max(p, self.elapsed() / (60 * self.config.max_minutes))
        return min(p, 1.0)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        self._reset_window()
        bar = self._bar()
        if self.step == 0:
            self._log(self._evaluate({"epoch": 0, "step": 0}))
            self._reset_window()  # the throughput of training steps only
        self.start = time.perf_counter()  # the budget is for training, not the look at the untrained model
        self._agreed = self.elapsed_before
        stopped = self.out_of_time()
        while self.epoch < self.config.epochs and not stopped:
            self.batches.set_epoch(self.epoch)
            stopped = self._train_epoch(bar)
            if self.epoch_step == len(self.batches):
                self.epoch, self.epoch_step = self.epoch + 1, 0
            last = stopped or self.epoch == self.config.epochs
            if last or self.epoch % self.config.val_every == 0:
                self._report(validate=True)
        if bar is not None:
            bar.close()
        metrics = self._keep()
        return TrainResult(self.model, metrics, self.step,
                           self.epoch + self.epoch_step / len(self.batches), self.history)

    def _keep(self) -> dict[str, float]:
        """keep="best": load the best validation's weights into the model; its metrics, with
        `kept_best_of_step`. (Every checkpoint state carries them too, as "best", for a bundle
        written from a checkpoint.)"""
        last = self.history[-1] if self.history else {}
        if self.config.keep != "best" or self.best is None:
            return last
        best = self.best["metrics"]
        if best["step"] == self.step:  # the last weights are the best
            return last
        self.model.load_state_dict(self.best["model"])
        return {**best, "kept_best_of_step": best["step"]}

    def _train_epoch(self, bar) -> bool:
        """Steps through the rest of this epoch; True when the time budget stopped it."""
        every, seed = self.config.report_every, self.config.seed
        todo = list(self.batches)[self.epoch_step:]  # resumed mid-epoch: the rest of it
        # flips seeded by (seed, step, rank): the same flips after a resume, and from every feed
        steps = [Step(rows, (seed * 1_000_003 + self.step + k) * 1009 + self.rank
                      if self.config.flip else None) for k, rows in enumerate(todo)]
        self.wrapped.train()
        for batch in self.feed.epoch(steps):
            self._train_step(batch)
            if self.step % self.check_every == 0:
                self._check()
                self._agree_on_time()
                if bar is not None:
                    bar.set_postfix(loss=f"{self._last_total:.5g}", img_s=f"{self._rate():.0f}",
                                    refresh=False)
            if bar is not None:
                bar.update(1)
            if self.out_of_time():
                return True
            if every and self.step % every == 0 and self.epoch_step < len(self.batches):
                self._report(validate=False)
                self.wrapped.train()
        return False

    def _train_step(self, batch: Batch) -> None:
        """One optimizer step. Nothing here waits for the device: the loss terms are kept on it
        and read back by `_check` every check_every steps."""
        if self._cuda:
            ready = torch.cuda.Event(enable_timing=True)
            ready.record()
            self._waits.append((self._asked, ready))
        with self.autocast:
            loss = self.objective.loss(self.wrapped, batch)
        terms = loss._asdict()
        self._pending.append(torch.stack([v.detach().float().reshape(()) for v in terms.values()]))
        self._keys = list(terms)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.wrapped.parameters(), self.config.grad_clip)
        lr = self.config.lr * lr_factor(self.progress(), self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        after_step = getattr(self.objective, "after_step", None)
        if after_step is not None:
            after_step(self.model, loss)
        self.step, self.epoch_step = self.step + 1, self.epoch_step + 1
        if self.local_sgd and self.step % self.config.sync_every == 0:
            average_weights(self.model)
        self._steps += 1
        self._seen += len(batch.images)
        if self._cuda:
            self._asked = torch.cuda.Event(enable_timing=True)
            self._asked.record()  # the next batch is asked for now

    def _check(self) -> None:
        """Read back the loss terms of the steps since the last check (one wait for the device);
        add them to the report's sums; stop on a non-finite total, naming its step."""
        if not self._pending:
            return
        terms = torch.stack(self._pending).cpu().double()  # (steps, terms)
        first = self.step - len(self._pending) + 1  # the step number of row 0
        self._pending = []
        bad = (~torch.isfinite(terms[:, 0])).nonzero()
        if len(bad):
            i = int(bad[0])
            step, per_epoch = first + i, len(self.batches)
            epoch, batch = (step - 1) // per_epoch + 1, (step - 1) % per_epoch + 1
            shown = {k: float(v) for k, v in zip(self._keys, terms[i])}
            raise NonFiniteLoss(f"step {step} (epoch {epoch}, batch {batch}): the loss is "
                                f"{float(terms[i, 0])}; lower --lr or check the data (terms: {shown})")
        for k, v in zip(self._keys, terms.sum(0).tolist()):
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._last_total = float(terms[-1, 0])

    # ------------------------------------------------------------------ reporting
    def _reset_window(self) -> None:
        self._sums: dict[str, float] = {}
        self._pending: list[torch.Tensor] = []  # (terms,) per step, on the device, not yet read
        self._keys: list[str] = []
        self._last_total = float("nan")
        self._steps = self._seen = 0
        self._cuda = self.device.type == "cuda"
        self._waits: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        if self._cuda:
            self._asked = torch.cuda.Event(enable_timing=True)
            self._asked.record()
        self._t0 = time.perf_counter()

    def _device_figures(self) -> dict[str, float]:
        """CUDA: the share of the window's time the GPU spent waiting for batches (from the GPU
        reaching the point where the loop asked for a batch to the batch being ready: the feed's
        own kernels and any wait on its uploads or on the host), and the peak memory so far."""
        if not self._cuda:
            return {}
        torch.cuda.synchronize(self.device)
        wall = 1e3 * (time.perf_counter() - self._t0)
        wait = sum(a.elapsed_time(b) for a, b in self._waits)
        return {"data_wait": wait / max(wall, 1e-9),
                "gpu_peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20}

    def _rate(self) -> float:
        return self._seen / max(time.perf_counter() - self._t0, 1e-9)

    def _report(self, validate: bool) -> None:
        """Train means since the last report (+ validation at epoch ends) -> log and on_report."""
        self._check()  # waits for the device: the window's time below is the steps' own
        self._agree_on_time()
        device = self._device_figures()
        if self.local_sgd:
            average_weights(self.model)  # one model to validate and checkpoint
        metrics = {"epoch": self.epoch + self.epoch_step / len(self.batches), "step": self.step,
                   "lr": self.optimizer.param_groups[0]["lr"], "images_per_s": self._rate(),
                   "elapsed_s": self.elapsed(), **device}
        metrics.update({f"train_{k}": v / max(self._steps, 1) for k, v in self._sums.items()})
        if validate:
            metrics = self._evaluate(metrics)
            self._remember_best(metrics)
        self._log(metrics)
        if self.on_report is not None:
            self.on_report(metrics, self.state())
        self._reset_window()

    def _remember_best(self, metrics: dict[str, float]) -> None:
        """keep="best": a copy (on the device) of the weights of the best validation so far."""
        name, mode = self.select
        if self.config.keep != "best":
            return
        value = metrics.get(f"val_{name}", math.nan)
        value = self._rank0_value(value)  # every rank keeps the same weights: rank 0's validation decides
        if not math.isfinite(value):
            return
        best = None if self.best is None else self.best["metrics"][f"val_{name}"]
        if best is None or (value > best if mode == "max" else value < best):
            self.best = {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                         "metrics": dict(metrics, **{f"val_{name}": value})}

    def _evaluate(self, metrics: dict[str, float]) -> dict[str, float]:
        """Rank 0: validation metrics and figures of the bare model, under a fixed RNG seed so that
        neither depends on, nor disturbs, the training streams."""
        if not self.main:
            return metrics
        rows = self.cache.indices("val")
        if self.config.val_images:
            rows = rows[: self.config.val_images]
        if len(rows) == 0:
            return metrics
        val = ShardedBatches(rows, self.config.batch_size, shuffle=False, drop_last=False)
        self.model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self.autocast:
            torch.manual_seed(self.config.seed)
            batches = (read_batch(self.cache, r, self.device, None, self.channels_last) for r in val)
            metrics = {**metrics, **{f"val_{k}": float(v)
                                     for k, v in self.objective.validate(self.model, batches).items()}}
            first = read_batch(self.cache, next(iter(val)), self.device, None, self.channels_last)
            figures = self.objective.figures(self.model, first)
            records = getattr(self.objective, "records", None)
            arrays = {} if records is None or self.out is None else records(
                self.model, (read_batch(self.cache, r, self.device, None, self.channels_last) for r in val))
        if self.out is not None:
            epoch = int(math.ceil(metrics["epoch"]))
            for name, image in figures.items():
                save_png(self.out / "figures" / f"{name}_e{epoch:03d}.png", image)
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.save(buf, np.asarray(array))
                atomic_write_bytes(self.out / "records" / f"{name}_e{epoch:03d}.npy", buf.getvalue())
        return metrics

    def _log(self, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        if self.out is not None:
            lines = "".join(json.dumps(m, sort_keys=True) + "\n" for m in self.history)
            atomic_write_text(self.out / "metrics.jsonl", lines)
        if self.main and self.config.progress and "val_total" in metrics:
            shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("val_", "train_total"))}
            print(f"epoch {metrics['epoch']:.2f} step {metrics['step']}: {shown}", flush=True)

    def _bar(self):
        if not (self.main and self.config.progress):
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                    mininterval=1.0)


def kept_weights(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, float] | None]:
    """A checkpoint state's weights to keep (a bundle written from a checkpoint): the best
    validation's, with their metrics (and `kept_best_of_step`), when the run kept them and they are
    not the last; else the last weights and None."""
    best = state.get("best")
    if best is None or best["metrics"]["step"] == state["step"] or \
            state.get("config", {}).get("keep", "best") != "best":
        return state["model"], None
    return best["model"], {**best["metrics"], "kept_best_of_step": best["metrics"]["step"]}


@torch.no_grad()
def average_weights(model: nn.Module) -> None:
    """Replace every floating parameter and buffer of `model` by its mean over the workers of the
    default torch.distributed group: one all-reduce of a flat copy. `copy_` back keeps each
    tensor's memory format (channels_last conv weights stay channels_last)."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for t, mean in zip(tensors, flat.split([t.numel() for t in tensors])):
        t.copy_(mean.view(t.shape))


def _copy_to_cpu(value: Any) -> Any:
    """Nested dicts/lists of tensors and plain values, every tensor cloned onto the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _copy_to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_to_cpu(v) for v in value)
    return value
