"""Training throughput of the project's loop (`faceedit.trainer.fit`) against a bare reference loop
of the same model and optimizer step, side by side in one run. Prints JSON lines (stdout), then a table (stderr).

    python bench/bench_gpu.py --device cuda                          # H200: batch 128 and 1024
    python bench/bench_gpu.py --device cpu                           # CPU smoke (small sizes)
    python bench/bench_gpu.py --device cpu --old-trainer OLD.py      # + an older trainer.py's fit

The bare loop is the ceiling a training loop can reach on this device: the train images resident
on the device as uint8, a device-side permutation per epoch, a gather, random flips and the uint8 ->
float conversion on the device, bf16 autocast and channels_last as the loop uses them, the
objective's loss, the fused AdamW step and the calibrated decoder's running estimate, and nothing
that waits for the device between steps.

The project's loop runs `fit` with report windows of --window steps (the first is warm-up and
dropped); its figure is the median of the windows' images/s (the loop's own `images_per_s`, which
covers training steps, not validation), with its data-wait share and peak memory. `--old-trainer`
loads another trainer.py (e.g. `git show 9c096b7:faceedit/trainer.py > /tmp/old.py`) and measures
its `fit` the same way, in alternating rounds with the current one, so old vs new is one run.
"""

from __future__ import annotations

import argparse
import builtins
import functools
import importlib.util
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

import faceedit  # noqa: E402,F401  (first: sets OMP_WAIT_POLICY before torch loads OpenMP)
from faceedit.attributes import ATTRIBUTES  # noqa: E402
from faceedit.cache import Cache, write_arrays  # noqa: E402
from faceedit.model import VAE, VAEConfig  # noqa: E402
from faceedit.objective import VAEObjective  # noqa: E402
from faceedit.trainer import TrainConfig, cpu_has_bf16, fit  # noqa: E402

MODELS = {"default": {}, "wide": dict(channels=(32, 64, 128, 256), blocks=1, norm="group")}


def synthetic_cache(root: Path, n: int, size: int, val: int) -> Path:
    """Smooth random images (the speed does not depend on the pictures)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 3, size // 8, size // 8), dtype=np.uint8)
    images = small.repeat(8, axis=2).repeat(8, axis=3)  # (n, 3, size, size)
    return write_arrays(root, images, rng.integers(0, 2, (n, len(ATTRIBUTES))), f"bench-{n}-{size}",
                        val=val, source="bench")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bare_loop(cache: Cache, config: VAEConfig, batch: int, lr: float, device: torch.device,
              warmup: int, steps: int, compile: bool) -> dict:
    """The reference: everything on the device, no host synchronisation between steps."""
    torch.manual_seed(0)
    rows = cache.indices("train")
    data = torch.from_numpy(np.asarray(cache.images[rows])).to(device)  # (N, 3, S, S) uint8
    model = VAE(config).to(device).to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile else model
    objective = VAEObjective(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
    bf16 = device.type == "cuda" or cpu_has_bf16()  # the loop's precision="auto"
    n_batches = len(rows) // batch
    perm, k = torch.randperm(len(rows), device=device), 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        if k == n_batches:
            perm, k = torch.randperm(len(rows), device=device), 0
        x = data[perm[k * batch: (k + 1) * batch]]  # (B, 3, S, S) uint8
        k += 1
        flip = torch.rand(batch, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = objective.loss(forward, _Batch(x))
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        objective.after_step(model, loss)
    sync(device)
    return {"images_per_s": steps * batch / (time.perf_counter() - start), "gpu_peak_mib": peak_mib(device)}


class _Batch:
    def __init__(self, images: torch.Tensor):
        self.images = images


def project_loop(fit_fn, cache: Cache, config: VAEConfig, batch: int, lr: float, device: str,
                 window: int, windows: int, feed: str, compile: bool, threads: int) -> dict:
    """`fit` with a report every `window` steps; the median of the windows after the first."""
    steps_per_epoch = len(cache.indices("train")) // batch
    epochs = -(-window * windows // steps_per_epoch)
    extra = {"feed": feed, "compile": compile, "val_every": 10**6} if fit_fn is fit else {}
    train = TrainConfig(epochs=epochs, max_minutes=0, batch_size=batch, lr=lr, progress=False,
                        device=device, report_every=window, val_images=batch, threads=threads,
                        **extra)
    torch.manual_seed(0)
    result = fit_fn(VAE(config), VAEObjective(config), cache, train)
    windows_ = [h for h in result.history if h.get("step", 0) > 0 and h["step"] % window == 0]
    rates = [h["images_per_s"] for h in windows_[1:]]
    out = {"images_per_s": float(np.median(rates)), "windows": len(rates),
           "spread": [round(min(rates)), round(max(rates))]}
    for key in ("data_wait", "gpu_peak_mib"):
        if key in windows_[-1]:
            out[key] = float(np.median([h[key] for h in windows_[1:]])) if key == "data_wait" \
                else max(h[key] for h in windows_)
    return out


def load_fit(path: str):
    spec = importlib.util.spec_from_file_location("faceedit_old_trainer", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.fit


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache", type=Path, help="a dataset cache (default: a synthetic one)")
    p.add_argument("--images", type=int, default=0, help="synthetic train images (0: 20,000 on "
                   "CUDA, 2,048 on the CPU)")
    p.add_argument("--size", type=int, default=0, help="synthetic image side (0: 64; 32 on the CPU)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default: "
                   "128 1024 on CUDA, 16 64 on the CPU)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--feeds", nargs="+", default=["auto"], help="project-loop feeds to measure "
                   "(auto, resident, prefetch, host)")
    p.add_argument("--window", type=int, default=0, help="steps per measured window (0: 40 on "
                   "CUDA, 10 on the CPU)")
    p.add_argument("--windows", type=int, default=5, help="windows per run (the first is warm-up)")
    p.add_argument("--compile", action="store_true", help="also both loops under torch.compile")
    p.add_argument("--old-trainer", default=None, help="another trainer.py to measure beside")
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds (old / new / bare)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--lr", type=float, default=2e-3)
    args = p.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    images = args.images or (20_000 if cuda else 2_048)
    size = args.size or (64 if cuda else 32)
    batches = args.batches or ([128, 1024] if cuda else [16, 64])
    window = args.window or (40 if cuda else 10)
    if args.threads:
        torch.set_num_threads(args.threads)
    old_fit = load_fit(args.old_trainer) if args.old_trainer else None
    rows = []

    def record(row: dict) -> None:
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        cache = Cache.open(args.cache or synthetic_cache(Path(tmp) / "cache", images + 1000, size, 1000))
        size = cache.size
        head = {"device": str(device), "name": torch.cuda.get_device_name(device) if cuda else "cpu",
                "torch": torch.__version__, "train_images": len(cache.indices("train")),
                "image_size": size, "threads": torch.get_num_threads(),
                "load_average_1min": os.getloadavg()[0]}
        print(json.dumps(head), flush=True)
        for name in args.models:
            config = VAEConfig(image_size=size, **MODELS[name])
            params = sum(t.numel() for t in VAE(config).parameters())
            for batch in batches:
                common = {"model": name, "parameters": params, "batch": batch}
                for compile in ([False, True] if args.compile else [False]):
                    for r in range(args.rounds):
                        if old_fit is not None and not compile:
                            record({**common, "loop": "old", "round": r, **project_loop(
                                old_fit, cache, config, batch, args.lr, args.device, window,
                                args.windows, "host", False, args.threads)})
                        for feed in args.feeds:
                            if cuda:
                                torch.cuda.reset_peak_memory_stats(device)
                            record({**common, "loop": "project", "feed": feed, "compile": compile,
                                    "round": r, **project_loop(fit, cache, config, batch, args.lr,
                                                               args.device, window, args.windows,
                                                               feed, compile, args.threads)})
                        if cuda:
                            torch.cuda.reset_peak_memory_stats(device)
                        record({**common, "loop": "bare", "compile": compile, "round": r,
                                **bare_loop(cache, config, batch, args.lr, device, warmup=window,
                                            steps=window * (args.windows - 1), compile=compile)})
    _table(rows)
    return 0


def _table(rows: list[dict]) -> None:
    """project / bare (and old / project) per model, batch and compile setting, medians of rounds;
    to stderr (stdout holds the JSON lines)."""
    print = functools.partial(builtins.print, file=sys.stderr)
    print(f"{'model':8} {'batch':>5} {'compile':>7} {'loop':>16} {'images/s':>10} {'x bare':>7} "
          f"{'wait':>6} {'peak MiB':>8}")
    keys = sorted({(r["model"], r["batch"], r.get("compile", False)) for r in rows},
                  key=lambda k: (k[0], k[1], k[2]))
    for model, batch, compile in keys:
        group = [r for r in rows if (r["model"], r["batch"], r.get("compile", False)) == (model, batch, compile)]
        bare = np.median([r["images_per_s"] for r in group if r["loop"] == "bare"] or [np.nan])
        names = sorted({(r["loop"], r.get("feed", "")) for r in group})
        for loop, feed in names:
            sel = [r for r in group if (r["loop"], r.get("feed", "")) == (loop, feed)]
            rate = float(np.median([r["images_per_s"] for r in sel]))
            wait = sel[0].get("data_wait")
            peak = sel[0].get("gpu_peak_mib")
            label = f"{loop}{'/' + feed if feed else ''}"
            print(f"{model:8} {batch:5d} {str(compile):>7} {label:>16} {rate:10.0f} {rate / bare:7.2f} "
                  f"{'' if wait is None else f'{wait:.3f}':>6} {'' if peak is None else f'{peak:.0f}':>8}")
        old = {r["round"]: r["images_per_s"] for r in group if r["loop"] == "old"}
        new = {r["round"]: r["images_per_s"] for r in group if r["loop"] == "project"
               and r.get("feed") == names[-1][1]}
        if old and new:  # side by side: the median over rounds of each round's ratio
            ratios = [new[k] / old[k] for k in sorted(old) if k in new]
            print(f"{'':8} {'':5} {'':7} {'project / old':>16} {'':10} {float(np.median(ratios)):7.2f}"
                  f"  (rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    sys.exit(main())
