"""How distributed CPU workers synchronise: DDP (a gradient all-reduce every step) vs local SGD
(each worker steps on its own, the weights averaged every K steps: TrainConfig.sync_every).
Prints JSON.

    .venv/bin/python bench/bench_sync.py --cache runs/main/cache     # real faces; default: synthetic

Each setting runs the library's loop (`faceedit.trainer.fit`) in 2 gloo processes on 127.0.0.1 with
1 thread each, the default VAE, batch 16 per worker (the main job's Ray workers, without Ray's
reports, which cost the same in every setting), for --seconds of a time budget. The figure is
the loop's own images/s summed over both workers, the median of its report windows after the
first. Settings alternate, round after round, so a change in the machine's load shows as a
spread; `ratio_vs_ddp` is the median over rounds of each setting's images/s over that of its
round's DDP run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceedit.cache import Cache  # noqa: E402
from faceedit.model import VAE, VAEConfig  # noqa: E402
from faceedit.objective import VAEObjective  # noqa: E402
from faceedit.trainer import TrainConfig, fit  # noqa: E402

SETTINGS = {"ddp": 1, "local SGD K=2": 2, "local SGD K=4": 4, "local SGD K=8": 8}  # sync_every


def _worker(rank: int, port: int, cache: str, config: TrainConfig, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = VAE(VAEConfig(image_size=Cache.open(cache).size))
        wrap = torch.nn.parallel.DistributedDataParallel if config.sync_every == 1 else None
        result = fit(model, VAEObjective(model.config), Cache.open(cache), config, rank=rank,
                     world_size=2, wrap_model=wrap)
        if rank == 0:
            rates = [2 * m["images_per_s"] for m in result.history if m.get("images_per_s")]
            Path(out).write_text(json.dumps(rates))
    finally:
        dist.barrier()  # neither leaves while the other still talks to it
        dist.destroy_process_group()


def run(cache: str, config: TrainConfig) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.start_processes(_worker, args=(port, cache, config, f.name), nprocs=2,
                           start_method="spawn", join=True)
        rates = json.loads(Path(f.name).read_text())
    return float(np.median(rates[1:] if len(rates) > 2 else rates))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", help="a dataset cache (default: a synthetic one of 64x64 images)")
    p.add_argument("--seconds", type=float, default=20, help="time budget of each run")
    p.add_argument("--rounds", type=int, default=2, help="runs of every setting, alternating")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_sync_") as tmp:
        cache = args.cache
        if cache is None:
            from bench_ray import synthetic_cache
            cache = str(synthetic_cache(Path(tmp) / "cache", 4096 + 64, 64, 64))
        config = TrainConfig(epochs=1000, max_minutes=args.seconds / 60, batch_size=16, lr=1.4e-3,
                             report_every=100, val_images=16, progress=False, threads=1, device="cpu")
        rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.rounds):
            for name, sync_every in SETTINGS.items():
                rates[name].append(run(cache, replace(config, sync_every=sync_every)))
                print(f"{name}: {rates[name][-1]:.0f} images/s", file=sys.stderr, flush=True)
        ddp = rates["ddp"]
        result = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "workers": 2,
                  "threads_per_worker": 1, "batch_per_worker": 16, "seconds_per_run": args.seconds,
                  "load_average_1min": os.getloadavg()[0],
                  "images_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
                  "ratio_vs_ddp": {
                      k: float(np.median(np.array(v) / np.array(ddp))) for k, v in rates.items()}}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
