"""Make the real-face model that ships with faceedit: faceedit/data/celeba64/{bundle,bank}.

Takes a main job's bundle and bank trained on real CelebA faces (`./run.sh --data
../shared/data/celeba`), stores the weights as fp16 safetensors (half the size; the bundle loads
them into the fp32 model), re-measures the validation PSNR with those weights on the run's cache,
and records in config.json how the model was made ("shipped": command, commit, cache hash, val
PSNR) together with a sample of val files and their PSNR, which tests/test_shipped.py recomputes
from the CelebA images. The bank is copied with its source re-pointed at the fp16 model.

    PYTHONPATH=. python scripts/ship_model.py --run /work/runs/base --commit 9c096b7 \\
        --command "./run.sh --data ../shared/data/celeba"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from faceedit.bank import AttributeBank
from faceedit.bundle import RESERVED, load_bundle, save_bundle, weights_digest
from faceedit.cache import Cache, to_float
from faceedit.files import atomic_dir
from faceedit.metrics import psnr, reconstruction_psnr
from faceedit.shipped import SHIPPED, SAMPLE_FILES

OUT = Path(__file__).resolve().parents[1] / "faceedit" / "data" / SHIPPED


@torch.no_grad()
def sample_psnr(model, cache: Cache, n: int) -> tuple[list[str], float]:
    rows = cache.indices("val")[:n]
    x = to_float(cache.images[rows])
    return [cache.names[r] for r in rows], float(psnr(model.reconstruct(x), x).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a main job's output folder (bundle/, bank/, cache/)")
    ap.add_argument("--commit", required=True, help="the commit the run was made at")
    ap.add_argument("--command", required=True, help="the command that made the run")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    source = load_bundle(args.run / "bundle")
    cache = Cache.open(args.run / "cache")
    if cache.hash != source.meta.get("cache"):
        raise SystemExit(f"{args.run / 'cache'} is not the cache the bundle was trained on")
    model = source.model.half()
    with atomic_dir(args.out) as tmp:
        meta = {k: v for k, v in source.meta.items() if k not in RESERVED and k != "ray"}
        save_bundle(tmp / "bundle", model, meta)
        shipped = load_bundle(tmp / "bundle").model  # fp32 model, fp16-rounded weights
        files, sample = sample_psnr(shipped, cache, SAMPLE_FILES)
        doc = json.loads((tmp / "bundle" / "config.json").read_text())
        doc["shipped"] = {
            "command": args.command, "commit": args.commit, "cache_hash": cache.hash,
            "data": "CelebA aligned faces 000001-019000 (non-commercial research use only)",
            "val_psnr_recorded": source.meta.get("metrics", {}).get("val_psnr"),
            "val_psnr_fp16": reconstruction_psnr(shipped, cache, "val"),
            "val_faces": len(cache.indices("val")),
            "weights": "fp16 (the run's fp32 weights rounded; loaded into the fp32 model)",
            "sample_files": files, "sample_psnr_fp16": sample,
            "made_by": "scripts/ship_model.py",
        }
        (tmp / "bundle" / "config.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        bank = AttributeBank.load(args.run / "bank")
        src = dict(bank.info.get("source") or {})
        src.pop("bundle_hash", None)
        src["model_digest"] = weights_digest(shipped)
        src["note"] = "vectors computed with the run's fp32 weights; the shipped weights are their fp16 rounding"
        AttributeBank(bank.vectors, dict(bank.info, source=src)).save(tmp / "bank")
    print(f"wrote {args.out}: " + json.dumps({k: v for k, v in doc["shipped"].items() if k != "sample_files"}))


if __name__ == "__main__":
    main()
