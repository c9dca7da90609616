"""Audit throughput: edited faces decoded and scored by the judge per second.

    .venv/bin/python bench/bench_audit.py [--bundle B --bank K --cache C --judge J]
        [--attributes Smiling Male] [--faces 64] [--device cpu|cuda] [--workers N] [--pca]

With the four inputs (default: runs/bundle-real64, runs/bank-real64, runs/cache-real64,
runs/judge-real64 when all exist) it audits those; else it times the same code path on untrained
default-size models (a 64x64 VAE with D = 128 and the default judge) over a random-pixel cache in a
temporary folder, and says which in the JSON ("inputs"). The cost per face does not depend on the
weights. Prints one JSON object: faces_per_s (edited images decoded + scored per second; the
unedited reconstructions and the one-off encoding are included in the time), seconds, edited_images,
device, threads, cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceedit.audit import AuditConfig, Execution, Latent, compute, load_inputs, run_audit  # noqa: E402

REAL = {k: REPO / "runs" / f"{k}-real64" for k in ("bundle", "bank", "cache", "judge")}


class RandomBank:
    """Unit-length random vectors: what an untrained bank would hold."""

    def __init__(self, dim: int):
        self.dim = dim

    def vector(self, attr: str, method: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(hash((attr, method)) % 2**31)
        v = torch.randn(self.dim, generator=g)
        return v / v.norm()


def synthetic_cache(root: Path, n: int = 400, size: int = 64):
    from faceedit.attributes import ATTRIBUTES
    from faceedit.cache import Cache, write_arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.4).astype(np.int8)
    return Cache.open(write_arrays(root, images, labels, "sha256:random", val=n))  # all held out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for k in REAL:
        p.add_argument(f"--{k}", type=Path, default=None)
    p.add_argument("--attributes", nargs="+", default=["Smiling", "Male", "Eyeglasses", "Heavy_Makeup"])
    p.add_argument("--faces", type=int, default=32, help="faces per attribute and side")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="Ray workers (0: in-process)")
    p.add_argument("--pca", action="store_true", help="include the PCA baseline (its fit is not timed)")
    args = p.parse_args()
    config = AuditConfig(attributes=tuple(args.attributes), faces=args.faces,
                         batch_size=args.batch_size, pca=args.pca, strips=0)
    runner = None
    if args.workers:
        from workers.audit import ray_runner
        runner = ray_runner(args.workers, progress=False)
    paths = {k: getattr(args, k) or v for k, v in REAL.items()}
    warnings.simplefilter("ignore")
    if all(Path(v).exists() for v in paths.values()):
        inputs = load_inputs(*(str(paths[k]) for k in ("bundle", "bank", "cache", "judge")), config,
                             progress=False)
        start = time.perf_counter()
        result, _ = compute(inputs, config, Execution(runner, device=args.device, progress=False))
        which = {k: str(v) for k, v in paths.items()}
    else:
        from faceedit.judge import Judge, JudgeConfig
        from faceedit.model import VAE, VAEConfig

        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            cache = synthetic_cache(Path(tmp) / "cache")
            vae = VAE(VAEConfig()).eval()
            judge = Judge(JudgeConfig()).eval()
            start = time.perf_counter()
            result, _ = run_audit(cache, {"vae": Latent(vae, RandomBank(128))}, judge,
                                  np.full(40, 0.9), 0.75, config,
                                  execution=Execution(runner, device=args.device, progress=False))
        which = "untrained default-size VAE and judge on random pixels"
    seconds = time.perf_counter() - start
    print(json.dumps({
        "bench": "audit", "inputs": which, "device": args.device, "workers": args.workers,
        "attributes": len(config.attributes), "faces_per_side": args.faces,
        "edited_images": result.edited_images, "seconds": round(seconds, 2),
        "faces_per_s": round(result.edited_images / seconds, 1),
        "threads": torch.get_num_threads(), "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
