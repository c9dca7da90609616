"""Val PSNR against the number of train faces: is the VAE bound by the faces or by the compute?

For each N in --faces, a nested random subset of the cache's train split (the first N of one
seeded permutation, so the 1,000 faces are among the 3,000), the same val split for all:
- PCA (D = the VAE's latent size) fitted on those N faces, the linear baseline;
- the VAE trained on them for the same number of images seen (--images: the same compute for
  every N, the main job's is about 290,000) with the step-based cosine schedule, validated about
  --validations times and keeping the best val PSNR's weights (a small N overfits long before the
  budget ends; the kept weights are its best).
Both are scored by the same function (faceedit.metrics.reconstruction_psnr: mean PSNR of
decode(mu) over every val face). One JSON line per N goes to stdout and, rewritten after each N,
to --out, so a long run that is stopped keeps its finished points.

    .venv/bin/python bench/bench_faces.py --cache runs/main/cache --out faces.json --plot faces.png
    .venv/bin/python bench/bench_faces.py --cache runs/main/cache --faces 1000 0 --images 20000  # quick look

--faces 0 means every train face. The images-seen budget (not minutes) makes the figures
independent of the machine's load; the wall time of each run is printed beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceedit.cache import SPLITS, Cache  # noqa: E402
from faceedit.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from faceedit.metrics import reconstruction_psnr  # noqa: E402
from faceedit.model import VAE, VAEConfig  # noqa: E402
from faceedit.objective import VAEObjective  # noqa: E402
from faceedit.pca import fit_pca  # noqa: E402
from faceedit.trainer import TrainConfig, fit  # noqa: E402


def subset(cache: Cache, n: int, seed: int) -> Cache:
    """The cache with only n of its train faces left in the train split (the rest moved to the
    test split, which training never reads); the val split untouched."""
    train = cache.indices("train")
    if not 0 < n <= len(train):
        raise ValueError(f"--faces {n}: expected 1 to the cache's {len(train)} train faces (0: all)")
    keep = np.random.default_rng(seed).permutation(train)[:n]
    split = cache.split.copy()
    split[train] = SPLITS["test"]
    split[keep] = SPLITS["train"]
    return dataclasses.replace(cache, split=split)


def point(cache: Cache, n: int, args: argparse.Namespace, model_config: VAEConfig) -> dict:
    faces = subset(cache, n, args.seed)
    start = time.perf_counter()
    pca = reconstruction_psnr(fit_pca(faces, model_config.latent_dim, seed=args.seed), faces)
    pca_s = time.perf_counter() - start
    steps_per_epoch = max(n // args.batch, 1)
    epochs = max(math.ceil(args.images / (steps_per_epoch * args.batch)), 1)
    config = TrainConfig(epochs=epochs, max_minutes=0, batch_size=min(args.batch, n), lr=args.lr,
                         seed=args.seed, threads=args.threads, device=args.device, keep="best",
                         val_every=max(epochs // args.validations, 1), progress=False)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result = fit(VAE(model_config), VAEObjective(model_config), faces, config)
    train_s = time.perf_counter() - start
    vae = reconstruction_psnr(result.model.eval(), faces)
    curve = [(round(m["epoch"], 2), round(m["val_psnr"], 3)) for m in result.history if "val_psnr" in m]
    best_epoch = max(curve, key=lambda c: c[1])[0]
    return {"train_faces": n, "val_faces": len(faces.indices("val")), "pca_psnr": round(pca, 3),
            "vae_psnr": round(vae, 3), "vae_minus_pca": round(vae - pca, 3),
            "images_seen": result.step * config.batch_size, "epochs": epochs, "best_epoch": best_epoch,
            "val_curve": curve, "train_s": round(train_s, 1), "pca_s": round(pca_s, 1),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def plot(points: list[dict], path: Path, title: str) -> None:
    """Val PSNR of the VAE and of PCA against train faces (log axis), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = [p["train_faces"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(faces, [p["vae_psnr"] for p in points], "o-", label="VAE (best val weights)")
    ax.plot(faces, [p["pca_psnr"] for p in points], "s--", label="PCA, same D")
    for p in points:
        ax.annotate(f"{p['vae_psnr'] - p['pca_psnr']:+.2f}", (p["train_faces"], p["vae_psnr"]),
                    textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.12)
    ax.set_xticks(faces, [f"{n:,}" for n in faces])
    ax.minorticks_off()
    ax.set_xlabel("train faces")
    ax.set_ylabel("val PSNR (dB), decode(mu)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _title(run: dict) -> str:
    channels = "-".join(map(str, run["model"]["channels"]))
    return (f"VAE {channels}, D = {run['model']['latent_dim']}, {run['images']:,} images seen per run, "
            f"{run['device']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, help="a dataset cache (faceedit prepare); not with --replot")
    p.add_argument("--faces", type=int, nargs="+", default=[1000, 3000, 6500, 0],
                   help="train faces per point (0: all of the cache's train split)")
    p.add_argument("--images", type=int, default=290_000,
                   help="images seen per VAE run (the main job's 8 CPU minutes: about 290,000)")
    p.add_argument("--batch", type=int, default=32, help="batch size (the main job: 2 workers x 16)")
    p.add_argument("--lr", type=float, default=1.4e-3, help="peak learning rate (the main job's)")
    p.add_argument("--validations", type=int, default=15, help="about how many validations per run")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets and the runs")
    p.add_argument("--channels", type=int, nargs="+", default=None, help="model widths (default: VAEConfig's)")
    p.add_argument("--latent-dim", type=int, default=VAEConfig.latent_dim, help="D of the VAE and of PCA")
    p.add_argument("--out", type=Path, help="JSON file of the finished points (rewritten after each)")
    p.add_argument("--plot", type=Path, help="PNG of val PSNR against train faces, drawn at the end")
    p.add_argument("--replot", type=Path, help="an earlier run's --out JSON: only draw its --plot")
    args = p.parse_args()
    if args.replot is not None:
        run = json.loads(args.replot.read_text())
        plot(run["points"], args.plot or args.replot.with_suffix(".png"), _title(run))
        return 0
    if args.cache is None:
        p.error("--cache is required (unless --replot)")

    cache = Cache.open(args.cache)
    model_config = VAEConfig(image_size=cache.size, latent_dim=args.latent_dim,
                             **({"channels": tuple(args.channels)} if args.channels else {}))
    head = {"cache": str(args.cache), "images": args.images, "batch": args.batch, "lr": args.lr,
            "model": dataclasses.asdict(model_config), "torch": torch.__version__,
            "device": args.device, "threads": args.threads}
    rows = []
    for n in args.faces:
        row = point(cache, n or len(cache.indices("train")), args, model_config)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out is not None:
            atomic_write_text(args.out, json.dumps({**head, "points": rows}, indent=1))
    if args.plot is not None:
        plot(rows, args.plot, _title(head))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
