"""The dataset cache: faces decoded, cropped and resized once, read memory-mapped by every stage.

A cache is a folder written by `faceedit.prepare.prepare` (to a temporary name, then renamed, so a
half-written cache never looks complete):

    images.npy     uint8 (N, 3, S, S), opened memory-mapped
    labels.npy     int8  (N, 40), 1 where the attribute is present, 0 where absent
    split.npy      uint8 (N,), 0 = train, 1 = val, 2 = test
    names.txt      N source file names, one a line
    manifest.json  source, crop, size, count, split seed, content hash, duplicates, skipped files
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from faceedit.attributes import ATTRIBUTES

CACHE_FORMAT = 1
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
FILES = ("images.npy", "labels.npy", "split.npy", "names.txt", "manifest.json")


class CacheError(ValueError):
    """A cache folder that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class Cache:
    root: Path
    images: np.ndarray  # (N, 3, S, S) uint8, memory-mapped
    labels: np.ndarray  # (N, 40) int8 in {0, 1}
    split: np.ndarray  # (N,) uint8 in {0, 1, 2}
    names: tuple[str, ...]
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> "Cache":
        root = Path(root)
        if not root.is_dir():
            raise CacheError(f"{root}: no such cache folder (make one with `faceedit prepare`)")
        missing = [f for f in FILES if not (root / f).is_file()]
        if missing:
            raise CacheError(f"{root}: incomplete cache, missing {', '.join(missing)}")
        manifest = json.loads((root / "manifest.json").read_text())
        if manifest.get("format") != CACHE_FORMAT:
            raise CacheError(
                f"{root}/manifest.json: format {manifest.get('format')!r}, expected {CACHE_FORMAT}"
            )
        images = np.load(root / "images.npy", mmap_mode="r")
        labels = np.load(root / "labels.npy")
        split = np.load(root / "split.npy")
        names = tuple((root / "names.txt").read_text().split("\n")[: len(labels)])
        n, size = manifest["count"], manifest["size"]
        expected = {
            "images.npy": ((n, 3, size, size), images.shape, images.dtype, np.uint8),
            "labels.npy": ((n, len(ATTRIBUTES)), labels.shape, labels.dtype, np.int8),
            "split.npy": ((n,), split.shape, split.dtype, np.uint8),
        }
        for name, (want_shape, shape, dtype, want_dtype) in expected.items():
            if shape != want_shape or dtype != want_dtype:
                raise CacheError(
                    f"{root}/{name}: {dtype} {shape}, expected {np.dtype(want_dtype)} {want_shape}"
                )
        if len(names) != n:
            raise CacheError(f"{root}/names.txt: {len(names)} names, expected {n}")
        return cls(root, images, labels, split, names, manifest)

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def hash(self) -> str:
        """Content hash of pixels, labels and split (recorded by prepare)."""
        return str(self.manifest["content_hash"])

    def __len__(self) -> int:
        return len(self.labels)

    def indices(self, split: str) -> np.ndarray:
        """Row numbers of one split ("train", "val" or "test"), ascending."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split])


def write_arrays(root: str | Path, images: np.ndarray, labels: np.ndarray, content_hash: str,
                 val: int = 0, test: int = 0, split: np.ndarray | None = None,
                 names: list[str] | None = None, **manifest) -> Path:
    """A cache folder from arrays already in memory (tests, benchmarks): images uint8 (N, 3, S, S),
    labels (N, 40) in {0, 1}; the last `test` rows form the test split, the `val` rows before them
    the val split, the rest train; or `split` (N,) gives each row's split (0 train, 1 val, 2 test).
    names: the rows' source file names (default 000000.jpg, ...). `prepare` is the way from photos;
    this is the way from pixels a program made."""
    root = Path(root)
    n, size = len(images), images.shape[-1]
    if split is not None:
        split = np.asarray(split)
        if split.shape != (n,) or (val or test) or not np.isin(split, list(SPLITS.values())).all():
            raise ValueError(f"split: expected ({n},) values in 0/1/2 and no val/test counts, got "
                             f"{split.shape} {np.unique(split)[:5]} with val={val}, test={test}")
    elif val + test > n:
        raise ValueError(f"val={val} + test={test} rows: more than the {n} images")
    else:
        split = np.zeros(n, np.uint8)
        split[n - test - val: n - test] = SPLITS["val"]
        split[n - test:] = SPLITS["test"]
    if names is not None and len(names) != n:
        raise ValueError(f"names: {len(names)} names for {n} images")
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
    np.save(root / "labels.npy", np.asarray(labels).astype(np.int8))
    np.save(root / "split.npy", split.astype(np.uint8))
    (root / "names.txt").write_text("\n".join(names or [f"{i:06d}.jpg" for i in range(n)]))
    (root / "manifest.json").write_text(json.dumps({"format": CACHE_FORMAT, "size": size, "count": n,
                                                    "content_hash": content_hash, **manifest}))
    return root


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1]."""
    return torch.as_tensor(np.array(images)).float().div_(255.0)  # copy: memmaps are read-only


class CacheDataset(Dataset):
    """(image float32 (3, S, S) in [0, 1], labels float32 (40,)) for the given rows of a cache."""

    def __init__(self, cache: Cache, rows: np.ndarray, flip: bool = False):
        self.cache, self.rows, self.flip = cache, np.asarray(rows), flip

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = int(self.rows[i])
        x = torch.from_numpy(np.array(self.cache.images[row])).float().div_(255.0)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)  # horizontal flip: faces are left-right symmetric, labels are not sided
        return x, torch.from_numpy(self.cache.labels[row].astype(np.float32))
