"""Training throughput: Ray Train with N workers vs the plain single-process loop, in one run, on
the same model, the same effective batch and the same total CPU threads. Prints JSON.

    .venv/bin/python bench/bench_ray.py                       # CPU: 2 Ray workers vs plain
    .venv/bin/python bench/bench_ray.py --device cuda --batch 256 --images 40000 --workers 1 --rounds 1

CPU: the plain loop runs batch B with T threads; Ray runs N workers of batch B/N and T/N threads
each (one DDP step = B images either way). Runs alternate, plain / Ray / plain / Ray / plain, and
each Ray run is compared with the mean of the two plain runs around it (the ratio printed is the
median over rounds), so a change in the machine's load shows up as a spread, not a bias. On a
loaded machine torch's OpenMP threads spin-wait for each other and 2 threads can be many times
slower than 1 (--one-thread-reference measures it; load averages are printed).

images/s are taken over whole epochs after the first (warm-up): train images of an epoch divided
by the wall time between epoch ends, so they include validation of a few images, Ray's report
barrier and checkpoint; `loop_images_per_s` is the loop's own figure over its training steps only.

On CUDA (bf16 autocast and channels_last, the loop's defaults there, plus an fp32 reference) it
also reports the fraction of the training time the GPU waits for data, the loop's own `data_wait`
metric (faceedit/trainer.py). bench/bench_gpu.py compares the loop with a bare reference loop.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceedit.attributes import ATTRIBUTES  # noqa: E402
from faceedit.cache import Cache, write_arrays  # noqa: E402
from faceedit.model import VAE, VAEConfig  # noqa: E402
from faceedit.objective import VAEObjective  # noqa: E402
from faceedit.trainer import TrainConfig, fit  # noqa: E402


def synthetic_cache(root: Path, n: int, size: int, val: int) -> Path:
    """A cache of smooth random images (speed does not depend on the pictures)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 3, size // 8, size // 8), dtype=np.uint8)
    images = small.repeat(8, axis=2).repeat(8, axis=3)  # (n, 3, size, size)
    labels = rng.integers(0, 2, (n, len(ATTRIBUTES)))
    return write_arrays(root, images, labels, f"bench-{n}-{size}", val=val, source="bench")


def epoch_rate(history: list[dict], images_per_epoch: int) -> dict[str, float]:
    """images/s over the epochs after the first, from the elapsed time at each epoch end."""
    ends = [m for m in history if "val_total" in m and m["epoch"] >= 1]
    if len(ends) < 2:
        raise ValueError("need at least 2 epochs to skip the first one as warm-up")
    seconds = ends[-1]["elapsed_s"] - ends[0]["elapsed_s"]
    return {"images_per_s": images_per_epoch * (len(ends) - 1) / seconds,
            "loop_images_per_s": float(np.mean([m["images_per_s"] for m in ends[1:]])),
            "seconds_per_epoch": seconds / (len(ends) - 1)}


def run_plain(cache: Path, model_config: VAEConfig, config: TrainConfig, out: Path) -> dict:
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    result = fit(VAE(model_config), VAEObjective(model_config), Cache.open(cache), config, out)
    wall = time.perf_counter() - start
    n = len(Cache.open(cache).indices("train")) // config.batch_size * config.batch_size
    figures = {**epoch_rate(result.history, n), "wall_s": wall, "batch": config.batch_size,
               "threads": torch.get_num_threads(), "precision": config.precision}
    waits = [m["data_wait"] for m in result.history if "data_wait" in m]
    if waits:  # the loop's own figure on CUDA (faceedit.trainer: share of each report window)
        figures["gpu_data_wait_fraction"] = float(np.mean(waits))
    return figures


def run_ray(cache: Path, model_config: VAEConfig, config: TrainConfig, workers: int, out: Path,
            device: str, threads: int) -> dict:
    from faceedit.objective import VAERecipe
    from workers.train import RayConfig, train_on_ray

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # progress lines to stderr, the JSON to stdout
        run = train_on_ray(cache, out / "vae", VAERecipe(model_config), config, workers,
                           RayConfig(storage=str(out / "storage"), run_name="bench",
                                     keep_checkpoints=0, num_cpus=threads,
                                     gpu="yes" if device.startswith("cuda") else "no"),
                           log_dir=out / "log")
    wall = time.perf_counter() - start
    n = len(Cache.open(cache).indices("train")) // (workers * config.batch_size) * workers * config.batch_size
    return {**epoch_rate(run.checkpoints, n), "wall_s_with_ray_start": wall, "workers": workers,
            "batch_per_worker": config.batch_size, "threads_per_worker": run.placement.cpus_per_worker}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="a dataset cache (default: a synthetic one of --images)")
    p.add_argument("--images", type=int, default=4096, help="train images of the synthetic cache")
    p.add_argument("--size", type=int, default=64, help="image side of the synthetic cache")
    p.add_argument("--batch", type=int, default=64, help="effective batch (split over Ray workers)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up)")
    p.add_argument("--workers", type=int, default=2, help="Ray workers")
    p.add_argument("--rounds", type=int, default=2, help="Ray runs, each between two plain runs")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="total CPU threads")
    p.add_argument("--one-thread-reference", action="store_true",
                   help="also run the plain loop with 1 thread (CPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="model widths (default: VAEConfig's)")
    args = p.parse_args()
    if args.batch % args.workers:
        raise ValueError(f"--batch {args.batch} is not divisible by {args.workers} workers")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        cache = args.cache or synthetic_cache(tmp / "cache", args.images + 256, args.size, 256)
        size = Cache.open(cache).size
        model_config = VAEConfig(image_size=size, **({"channels": tuple(args.channels)} if args.channels else {}))
        base = TrainConfig(epochs=args.epochs, batch_size=args.batch, val_images=256, progress=False,
                           device=args.device, threads=args.threads, flip=True)
        result = {"device": args.device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                  "model": {"channels": list(model_config.channels), "blocks": model_config.blocks,
                            "parameters": sum(t.numel() for t in VAE(model_config).parameters())},
                  "train_images": len(Cache.open(cache).indices("train")), "image_size": size,
                  "effective_batch": args.batch, "total_threads": args.threads, "workers": args.workers,
                  "load_average_1min": [os.getloadavg()[0]]}
        if args.device.startswith("cuda"):
            result["plain_fp32"] = run_plain(cache, model_config, dataclasses.replace(base, precision="fp32"),
                                             tmp / "plain_fp32")
        # plain, Ray, plain, Ray, ..., plain: each Ray run is compared with the plain runs around it
        ray_config = dataclasses.replace(base, batch_size=args.batch // args.workers, threads=0)
        plain, ray = [run_plain(cache, model_config, base, tmp / "plain0")], []
        for r in range(args.rounds):
            ray.append(run_ray(cache, model_config, ray_config, args.workers, tmp / f"ray{r}",
                               args.device, args.threads))
            plain.append(run_plain(cache, model_config, base, tmp / f"plain{r + 1}"))
            result["load_average_1min"].append(os.getloadavg()[0])
        if args.one_thread_reference and args.device == "cpu":
            result["plain_1_thread"] = run_plain(cache, model_config, dataclasses.replace(base, threads=1),
                                                 tmp / "plain_1")
        ratios = [ray[r]["images_per_s"] / np.mean([plain[r]["images_per_s"], plain[r + 1]["images_per_s"]])
                  for r in range(args.rounds)]
        result.update(plain=plain, ray=ray, ratios=ratios,
                      plain_images_per_s=float(np.mean([x["images_per_s"] for x in plain])),
                      ray_images_per_s=float(np.mean([x["images_per_s"] for x in ray])),
                      ratio_ray_vs_plain=float(np.median(ratios)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
