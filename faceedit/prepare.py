"""`prepare`: decode, crop and resize a CelebA folder once into the dataset cache (faceedit/cache.py).

Decoding is spread over all cores in chunks of files (one small message per chunk, so passing
pixels between processes costs little next to decoding them). The file bytes are hashed while they
are read, which finds byte-identical images for free. The cache is written into a temporary folder
that is renamed into place only when complete (faceedit/files.py `atomic_dir`).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from faceedit.attributes import ATTRIBUTES
from faceedit.cache import CACHE_FORMAT, SPLITS, CacheError
from faceedit.celeba import CelebAError, CelebAListing, list_celeba
from faceedit.files import OutputExists, atomic_dir, atomic_write_json, atomic_write_text, check_replaceable
from faceedit.images import CELEBA_CROP, CELEBA_SIZE, decode_chunk

CHUNK = 128  # files per task: ~1.5 MB of 64x64 pixels per message back
SERIAL_BELOW = 256  # fewer files than this are decoded in-process (a pool costs ~0.3 s to start)


@dataclass(frozen=True)
class PrepareConfig:
    """The options of `prepare` (the `faceedit prepare` command line is generated from these)."""

    size: int = field(default=64, metadata={"help": "side S of the square faces in the cache, pixels"})
    limit: int | None = field(default=None, metadata={"help": "keep only the first N label rows (tests, quick looks)"})
    skip_bad: bool = field(default=False, metadata={
        "help": "skip bad rows and unreadable images, counting them in manifest.json, instead of stopping"})
    seed: int = field(default=0, metadata={"help": "seed of the carved split (used when there is no official partition)"})
    split: tuple[float, float, float] = field(default=(0.9, 0.05, 0.05), metadata={
        "help": "train, val, test fractions of a carved split"})
    workers: int | None = field(default=None, metadata={"help": "decoding processes; all cores when unset"})


class DuplicateImagesWarning(UserWarning):
    """Byte-identical image files in one dataset (kept, in one split, and listed in the manifest)."""


def prepare(
    data_dir: str | Path,
    out: str | Path,
    size: int = 64,
    limit: int | None = None,
    skip_bad: bool = False,
    seed: int = 0,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the cache of a CelebA folder to `out` and return `out`.

    images.npy uint8 (N, 3, S, S), labels.npy int8 (N, 40), split.npy uint8 (N,), names.txt and
    manifest.json (see faceedit/cache.py). The official partition is used when it has val and test
    rows; otherwise a seeded `split` (train, val, test fractions) is carved and recorded. Bad items
    raise a CelebAError / ImageError naming the file, or are skipped and counted with `skip_bad`.
    """
    _check_args(size, limit, split)
    _check_out(Path(out))
    listing = list_celeba(data_dir, limit=limit, skip_bad=skip_bad)
    if len(listing) == 0:
        raise CelebAError(f"{listing.root}: no labelled images to prepare")
    out = Path(out)
    with atomic_dir(out) as tmp:
        kept, digests, skipped = _decode_all(listing, size, tmp, skip_bad, workers, progress)
        files = [listing.files[i] for i in kept]
        labels = listing.labels[kept]  # (N, 40) int8
        groups = _duplicate_groups(files, digests)
        split_arr, split_info = _split(listing, kept, groups, seed, split)
        np.save(tmp / "labels.npy", labels)
        np.save(tmp / "split.npy", split_arr)
        atomic_write_text(tmp / "names.txt", "\n".join(files) + "\n")
        manifest = _manifest(listing, size, files, split_info, groups, list(listing.skipped) + skipped)
        manifest["content_hash"] = _content_hash(tmp / "images.npy", labels, split_arr)
        atomic_write_json(tmp / "manifest.json", manifest)
        _make_readable(tmp)
    if groups:
        names = "; ".join(" = ".join(g) for g in groups[:5])
        warnings.warn(f"{len(groups)} sets of byte-identical images, kept in one split each: {names}",
                      DuplicateImagesWarning, stacklevel=2)
    return out


def _make_readable(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; a cache is shared (other users, containers)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in folder.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not a cache (a typo in --out must not delete a user's files)."""
    try:
        check_replaceable(out, "cache folder")
    except OutputExists as e:
        raise CacheError(f"{e} (it is not a faceedit cache)") from None


def _check_args(size: int, limit: int | None, split: tuple[float, float, float]) -> None:
    if size < 8:
        raise ValueError(f"size {size}: expected an image side of at least 8 pixels")
    if limit is not None and limit < 1:
        raise ValueError(f"limit {limit}: expected a positive number of rows")
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split {split}: expected three fractions (train, val, test) summing to 1")


# ---------------------------------------------------------------------------- decoding

def _decode_all(listing: CelebAListing, size: int, tmp: Path, skip_bad: bool, workers: int | None,
                progress: bool) -> tuple[list[int], list[str], list[dict]]:
    """Decode every listed image into tmp/images.npy; returns (kept rows, their digests, skipped)."""
    n = len(listing)
    paths = [str(p) for p in listing.paths]
    tasks = [(s, paths[s:s + CHUNK], size) for s in range(0, n, CHUNK)]
    full = np.lib.format.open_memmap(tmp / "decoded.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
    digests = [""] * n
    bad: dict[int, str] = {}
    workers = workers or os.cpu_count() or 1
    with tqdm(total=n, desc="prepare", unit="img", disable=not progress) as bar, \
            _pool(workers if n >= SERIAL_BELOW else 1) as pool:
        for chunk in (pool.imap_unordered(decode_chunk, tasks) if pool else map(decode_chunk, tasks)):
            k = len(chunk.digests)
            full[chunk.start:chunk.start + k] = chunk.pixels
            digests[chunk.start:chunk.start + k] = chunk.digests
            for j, message in chunk.errors:
                if not skip_bad:
                    raise CelebAError(message)
                bad[chunk.start + j] = message
            bar.update(k)
    kept = [i for i in range(n) if i not in bad]
    full.flush()
    if bad:
        _copy_rows(full, kept, tmp / "images.npy")
    del full  # close the memory map before renaming or removing its file
    if bad:
        (tmp / "decoded.npy").unlink()
    else:
        os.replace(tmp / "decoded.npy", tmp / "images.npy")
    skipped = [{"file": listing.files[i], "reason": m} for i, m in sorted(bad.items())]
    return kept, [digests[i] for i in kept], skipped


class _pool:
    """A process pool as a context manager, or None for in-process decoding (workers == 1)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            # fork, as torch's DataLoader does on Linux: children start at once, with nothing to
            # import. (spawn/forkserver re-import the caller's __main__ in the children, which costs
            # seconds when it imports torch.) The children only run PIL and numpy.
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            self.pool = ctx.Pool(self.workers)
        return self.pool

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()


def _copy_rows(full: np.ndarray, kept: list[int], path: Path) -> None:
    """Write the rows `kept` of `full` (N, 3, S, S) to a new .npy at `path`, in blocks."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(kept),) + full.shape[1:])
    for s in range(0, len(kept), 4096):
        out[s:s + 4096] = full[kept[s:s + 4096]]
    out.flush()
    del out


# ---------------------------------------------------------------------------- duplicates and split

def _duplicate_groups(files: list[str], digests: list[str]) -> list[list[str]]:
    """Names of byte-identical files, one list per set of two or more, in file order."""
    by_digest: dict[str, list[str]] = {}
    for name, digest in zip(files, digests):
        by_digest.setdefault(digest, []).append(name)
    return [names for names in by_digest.values() if len(names) > 1]


def carve_split(n: int, seed: int, fractions: tuple[float, float, float]) -> np.ndarray:
    """A seeded random split: (n,) uint8 with round(n * val) ones and round(n * test) twos."""
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    order = np.random.default_rng(seed).permutation(n)
    split = np.zeros(n, dtype=np.uint8)
    split[order[:n_val]] = SPLITS["val"]
    split[order[n_val:n_val + n_test]] = SPLITS["test"]
    return split


def _split(listing: CelebAListing, kept: list[int], groups: list[list[str]], seed: int,
           fractions: tuple[float, float, float]) -> tuple[np.ndarray, dict]:
    """(split (N,) uint8, its manifest entry); duplicates follow their first copy's split."""
    partition = None if listing.partition is None else listing.partition[kept]
    usable = partition is not None and {1, 2} <= set(np.unique(partition).tolist())
    if usable:
        split, info = partition.astype(np.uint8), {"source": "official list_eval_partition.txt", "carved": False}
    else:
        why = "no list_eval_partition.txt" if partition is None else "list_eval_partition.txt has no val/test rows"
        split = carve_split(len(kept), seed, fractions)
        info = {"source": f"carved ({why})", "carved": True, "seed": seed, "fractions": list(fractions)}
    row = {name: i for i, name in enumerate(listing.files[k] for k in kept)}
    moved = []
    for names in groups:
        first = split[row[names[0]]]
        for name in names[1:]:
            if split[row[name]] != first:
                split[row[name]] = first
                moved.append(name)
    info["moved_duplicates"] = moved
    info["counts"] = {s: int((split == v).sum()) for s, v in SPLITS.items()}
    return split, info


# ---------------------------------------------------------------------------- manifest

def _manifest(listing: CelebAListing, size: int, files: list[str], split_info: dict,
              groups: list[list[str]], skipped: list[dict]) -> dict:
    w, h = CELEBA_SIZE
    return {
        "format": CACHE_FORMAT,
        "source": str(listing.root.resolve()),
        "crop": {
            "kind": "celeba-centre",
            "box_178x218": [(w - CELEBA_CROP) // 2, (h - CELEBA_CROP) // 2,
                            (w + CELEBA_CROP) // 2, (h + CELEBA_CROP) // 2],
            "side": f"{CELEBA_CROP} * min(W/{w}, H/{h}), centred",
            "resize": "PIL BOX (area average)",
        },
        "size": size,
        "count": len(files),
        "attributes": list(ATTRIBUTES),
        "split": split_info,
        "duplicates": groups,
        "skipped": {"count": len(skipped), "items": skipped},
    }


def _content_hash(images_path: Path, labels: np.ndarray, split: np.ndarray) -> str:
    """sha256 over the pixels, labels and split (shapes included), streamed from disk."""
    h = hashlib.sha256()
    images = np.load(images_path, mmap_mode="r")
    for arr in (images, labels, split):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
    for s in range(0, len(images), 4096):
        h.update(np.ascontiguousarray(images[s:s + 4096]).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    h.update(np.ascontiguousarray(split).tobytes())
    return "sha256:" + h.hexdigest()
