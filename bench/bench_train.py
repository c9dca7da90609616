"""Training throughput of the default VAE with the plain loop, fp32 vs bf16 autocast side by
side, and the cost of reading batches.

    .venv/bin/python bench/bench_train.py --cache runs/main/cache [--steps 60] [--rounds 3]

Prints one JSON object: train images/s (steady state, after warm-up steps) in fp32 and in bf16
autocast with the fused AdamW the loop uses, and in bf16 with the per-tensor AdamW, measured in
alternating rounds so that a change in the machine's load shows as spread, not bias: the medians and the median of the per-round ratios; the model's
size; and milliseconds per batch to read the memory-mapped cache two ways: per-item `CacheDataset`
+ the default collate of a DataLoader, vs the loop's `read_batch` (one sorted fancy-index copy).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import faceedit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
import numpy as np
import torch

from faceedit.cache import Cache, CacheDataset
from faceedit.config import config_to_dict
from faceedit.model import VAE, VAEConfig
from faceedit.objective import VAEObjective
from faceedit.trainer import ShardedBatches, TrainConfig, cpu_has_bf16, read_batch


def read_costs(cache: Cache, batch_size: int, batches: int) -> dict[str, float]:
    rows = cache.indices("train")
    sampler = ShardedBatches(rows, batch_size, seed=0)
    t = time.perf_counter()
    for _, r in zip(range(batches), sampler):
        read_batch(cache, r, torch.device("cpu"), torch.Generator().manual_seed(0), channels_last=True)
    sliced = (time.perf_counter() - t) / batches
    loader = torch.utils.data.DataLoader(CacheDataset(cache, rows, flip=True), batch_size=batch_size,
                                         shuffle=True, num_workers=0)
    t = time.perf_counter()
    for _, _b in zip(range(batches), loader):
        pass
    per_item = (time.perf_counter() - t) / batches
    return {"read_batch_ms": 1e3 * sliced, "dataset_collate_ms": 1e3 * per_item}


def train_rate(cache: Cache, config: VAEConfig, train: TrainConfig, steps: int, warmup: int,
               bf16: bool, fused: bool = True) -> float:
    torch.manual_seed(0)
    model = VAE(config).to(memory_format=torch.channels_last)
    objective = VAEObjective(config)
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=fused)
    sampler = iter(ShardedBatches(cache.indices("train"), train.batch_size, seed=0))
    for i in range(warmup + steps):
        if i == warmup:
            t = time.perf_counter()
        batch = read_batch(cache, next(sampler), torch.device("cpu"), torch.Generator().manual_seed(i), True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = objective.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        if train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        opt.step()
    return steps * train.batch_size / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=3, help="alternating fp32/bf16 rounds")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Cache.open(args.cache)
    config = VAEConfig(image_size=cache.size)
    train = TrainConfig(batch_size=args.batch_size)
    rates: dict[str, list[float]] = {"fp32": [], "bf16": [], "bf16_per_tensor_adamw": []}
    for _ in range(args.rounds):
        for name in rates:
            rates[name].append(train_rate(cache, config, train, args.steps, args.warmup,
                                          bf16=name != "fp32", fused=name != "bf16_per_tensor_adamw"))
    ratios = [b / f for f, b in zip(rates["fp32"], rates["bf16"])]
    fused = [b / u for b, u in zip(rates["bf16"], rates["bf16_per_tensor_adamw"])]
    print(json.dumps({
        "bench": "train", "cache": args.cache, "model": config_to_dict(config),
        "params": sum(p.numel() for p in VAE(config).parameters()), "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
        "cpu_has_bf16": cpu_has_bf16(),
        "train_images_per_s": {k: round(float(np.median(v)), 1) for k, v in rates.items()},
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "bf16_over_fp32": round(float(np.median(ratios)), 3),
        "fused_over_per_tensor_adamw": round(float(np.median(fused)), 3),
        **{k: round(v, 2) for k, v in read_costs(cache, args.batch_size, 20).items()},
    }))


if __name__ == "__main__":
    main()
