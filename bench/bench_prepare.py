"""Benchmark: `prepare` throughput, and one epoch from the cache vs decoding JPEGs each epoch.

Prints one JSON object. The JPEG baseline is torchvision's own `torchvision.datasets.CelebA` class
(its `__getitem__`: PIL open of the file, then the transform CenterCrop(148) -> Resize(S) ->
ToTensor, the usual CelebA pipeline) on a temporary folder that symlinks the images and supplies the
metadata files the class insists on (identity, bbox, landmarks: zeros; partition: all train). Only
its md5 check of those files is bypassed (they are not CelebA's originals); the per-item work is
the class's own. Both epochs go through a DataLoader with the same batch size, workers and shuffle.
The cache is read three ways: per item (faceedit.cache.CacheDataset, collated), whole batches per
DataLoader item (one fancy index of the memory map), and the way faceedit.trainer reads it
(ShardedBatches + read_batch in the training process, no DataLoader).

    .venv/bin/python bench/bench_prepare.py --data ../shared/data/celeba
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from faceedit.cache import Cache, CacheDataset, to_float
from faceedit.celeba import ATTR_FILE, IMAGE_DIR, list_celeba
from faceedit.prepare import prepare

REPO = Path(__file__).resolve().parents[1]


class _CelebANoMd5(datasets.CelebA):
    """torchvision's CelebA without the md5 check of its metadata files (ours are stand-ins)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() for _, _, f in self.file_list[1:]) and (folder / IMAGE_DIR).is_dir()


def torchvision_folder(data: Path, tmp: Path, files: tuple[str, ...]) -> Path:
    """tmp/celeba/ in torchvision's layout: symlinked images, our attr file, stand-in metadata."""
    folder = tmp / "celeba"
    (folder / IMAGE_DIR).mkdir(parents=True)
    for f in files:
        os.symlink(data / IMAGE_DIR / f, folder / IMAGE_DIR / f)
    lines = (data / ATTR_FILE).read_text().splitlines()
    (folder / ATTR_FILE).write_text("\n".join(lines[: 2 + len(files)]) + "\n")
    (folder / "list_eval_partition.txt").write_text("".join(f"{f} 0\n" for f in files))
    (folder / "identity_CelebA.txt").write_text("".join(f"{f} 0\n" for f in files))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{len(files)}\nimage_id x_1 y_1 width height\n" + "".join(f"{f} 0 0 0 0\n" for f in files))
    marks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{len(files)}\n{marks}\n" + "".join(f"{f}" + " 0" * 10 + "\n" for f in files))
    return tmp


class _CacheBatches(torch.utils.data.Dataset):
    """Whole batches from the cache: one sorted fancy index of the memory map per batch."""

    def __init__(self, cache: Cache, batch_size: int):
        self.cache, self.batch_size = cache, batch_size
        self.order = np.random.default_rng(0).permutation(len(cache))

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(self.order[b * self.batch_size:(b + 1) * self.batch_size])
        return to_float(self.cache.images[rows]), torch.from_numpy(self.cache.labels[rows].astype(np.float32))


def epoch_seconds(loader: DataLoader) -> tuple[float, int]:
    """Wall time of one pass over `loader` (workers already started), and the images seen."""
    seen = 0
    start = time.perf_counter()
    for x, _ in loader:
        seen += x.shape[0]
    return time.perf_counter() - start, seen


def trainer_epoch_seconds(cache: Cache, batch_size: int, threads: int) -> float:
    """One epoch exactly as faceedit.trainer reads the cache: ShardedBatches (sorted batch rows of
    a seeded permutation) + read_batch (one fancy-index copy, random flips, uint8 -> float), with
    `threads` torch threads."""
    from faceedit.trainer import ShardedBatches, read_batch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _trainer_epoch(cache, batch_size, ShardedBatches, read_batch)
    finally:
        torch.set_num_threads(before)


def _trainer_epoch(cache: Cache, batch_size: int, sharded_batches, read_batch) -> float:
    batches = sharded_batches(np.arange(len(cache)), batch_size, drop_last=False)
    flip = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for rows in batches:
        read_batch(cache, rows, torch.device("cpu"), flip)  # images (B, 3, S, S) float32
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "celeba")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="first N faces (default: all)")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args()
    if not (args.data / ATTR_FILE).is_file():
        sys.exit(f"no CelebA at {args.data}: pass --data")
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare."))
    try:
        result = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))


def run(args: argparse.Namespace, tmp: Path) -> dict:
    start = time.perf_counter()
    cache_dir = prepare(args.data, tmp / "cache", size=args.size, limit=args.limit,
                        workers=args.workers, progress=False)
    prepare_s = time.perf_counter() - start
    cache = Cache.open(cache_dir)
    n = len(cache)
    threads = torch.get_num_threads()
    # In the training process, before any DataLoader worker exists (as in training).
    trainer_s = {t: trainer_epoch_seconds(cache, args.batch_size, t) for t in sorted({threads, 1})}
    loader_args = dict(batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                       persistent_workers=args.workers > 0)
    cache_loader = DataLoader(CacheDataset(cache, np.arange(n)), **loader_args)
    tv_root = torchvision_folder(args.data, tmp / "tv", list_celeba(args.data, limit=args.limit).files)
    pipeline = transforms.Compose([transforms.CenterCrop(148), transforms.Resize(args.size), transforms.ToTensor()])
    jpeg_set = _CelebANoMd5(str(tv_root), split="all", target_type="attr", transform=pipeline)
    assert len(jpeg_set) == n, (len(jpeg_set), n)
    jpeg_loader = DataLoader(jpeg_set, **loader_args)
    batch_loader = DataLoader(_CacheBatches(cache, args.batch_size), batch_size=None, shuffle=True,
                              num_workers=args.workers, persistent_workers=args.workers > 0)
    next(iter(cache_loader)), next(iter(jpeg_loader)), next(iter(batch_loader))  # start workers untimed
    cache_s, seen_cache = epoch_seconds(cache_loader)
    batch_s, seen_batch = epoch_seconds(batch_loader)
    jpeg_s, seen_jpeg = epoch_seconds(jpeg_loader)
    return {
        "images": n,
        "size": args.size,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "batch_size": args.batch_size,
        "content_hash": cache.hash,
        "prepare_s": round(prepare_s, 2),
        "prepare_images_per_s": round(n / prepare_s, 1),
        "epoch_cache_dataloader_s": round(cache_s, 3),
        "epoch_cache_batch_dataloader_s": round(batch_s, 3),
        "epoch_cache_trainer_read_batch_s": {f"{t}_torch_threads": round(v, 3) for t, v in trainer_s.items()},
        "epoch_jpeg_torchvision_celeba_s": round(jpeg_s, 3),
        "ratio_jpeg_over_cache_dataloader": round(jpeg_s / cache_s, 1),
        "ratio_jpeg_over_cache_batch_dataloader": round(jpeg_s / batch_s, 1),
        "ratio_jpeg_over_cache_trainer_read_batch": {f"{t}_torch_threads": round(jpeg_s / v, 1)
                                                     for t, v in trainer_s.items()},
        "goal_ratio": 20,
        "images_seen": [seen_cache, seen_batch, seen_jpeg],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "jpeg_baseline": "torchvision.datasets.CelebA.__getitem__ (md5 check bypassed), "
                         "CenterCrop(148) -> Resize(S) -> ToTensor, same DataLoader settings",
    }


if __name__ == "__main__":
    main()
