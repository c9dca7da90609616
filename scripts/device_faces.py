"""Carry a dataset cache to the lent GPU machine, which takes 64 MiB per call: the faces as WebP
(lossy at --quality, or --lossless), in parts of at most --part-mib each, and back into a cache
there. The 19,000 real faces are 233 MB at 64x64 and 934 MB at 128x128 as raw uint8.

    python scripts/device_faces.py pack runs/cache128 .faces --quality 90   # [--splits train val]
    # device calls, back to back (the machine keeps ignored paths while warm, 30 idle seconds):
    #   carry [".faces/pack.json", ".faces/part-000.npz"], then [".faces/part-001.npz"], ...
    python3 scripts/device_faces.py unpack .faces /tmp/cache128      # there, once every part arrived

pack.json lists every part with its SHA-256; unpack names a part that is missing or differs, and
writes the cache to a temporary name first. A lossy cache is a different cache: measure every model
and its baseline (`faceedit pca`) on the unpacked one (train faces at quality 95 were 39.5 dB from
the originals at 64x64; at 128x128 quality 90 gives 40.1 dB in 76 MiB for the 18,050 train and
val faces; the models reach 21-24 dB).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceedit.cache import SPLITS, Cache, write_arrays  # noqa: E402
from faceedit.files import atomic_dir, atomic_write_bytes, atomic_write_json  # noqa: E402


def _webp(face: np.ndarray, quality: int | None) -> bytes:
    """(3, S, S) uint8 -> WebP bytes (lossless when quality is None)."""
    buf = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(face.transpose(1, 2, 0)))
    if quality is None:
        image.save(buf, "WEBP", lossless=True, quality=100, method=4)
    else:
        image.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


def _save_part(out: Path, index: int, blobs: list[bytes], rows: list[int], cache: Cache) -> dict:
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    buf = io.BytesIO()
    np.savez(buf, blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=offsets, rows=np.array(rows),
             labels=cache.labels[rows], split=cache.split[rows])
    name = f"part-{index:03d}.npz"
    atomic_write_bytes(out / name, buf.getvalue())
    return {"name": name, "faces": len(rows), "bytes": buf.tell(),
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}


def pack(cache_dir: Path, out: Path, splits: list[str], quality: int | None, part_mib: float) -> dict:
    cache = Cache.open(cache_dir)
    rows = np.flatnonzero(np.isin(cache.split, [SPLITS[s] for s in splits]))
    out.mkdir(parents=True, exist_ok=True)
    header, per_face = 4096, 64  # the npz's headers; a face's label row, split, offset and row number
    parts, blobs, part_rows, size = [], [], [], header
    for row in rows:
        blob = _webp(np.asarray(cache.images[row]), quality)
        if blobs and size + len(blob) + per_face > part_mib * 2**20:
            parts.append(_save_part(out, len(parts), blobs, part_rows, cache))
            blobs, part_rows, size = [], [], header
        blobs.append(blob)
        part_rows.append(int(row))
        size += len(blob) + per_face
    if blobs:
        parts.append(_save_part(out, len(parts), blobs, part_rows, cache))
    plan = {"source": str(cache_dir), "source_hash": cache.hash, "size": cache.size,
            "faces": len(rows), "splits": splits, "quality": quality or "lossless",
            "names": [cache.names[r] for r in rows], "parts": parts}
    atomic_write_json(out / "pack.json", plan)
    return plan


def unpack(packed: Path, cache_out: Path) -> Path:
    plan_file = packed / "pack.json"
    if not plan_file.is_file():
        raise FileNotFoundError(f"{plan_file}: no pack plan (carry it with the first part)")
    plan = json.loads(plan_file.read_text())
    S, n = plan["size"], plan["faces"]
    images = np.empty((n, 3, S, S), np.uint8)
    labels = np.empty((n, 40), np.int8)
    split = np.empty(n, np.uint8)
    position = {}  # source row -> position in the unpacked cache
    for part in plan["parts"]:
        path = packed / part["name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: part missing ({len(plan['parts'])} parts in {plan_file}); "
                                    "carry it in a device call while the machine is warm")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            raise ValueError(f"{path}: SHA-256 differs from {plan_file}'s: a partial or other copy")
        z = np.load(io.BytesIO(data))
        blob, offsets = z["blob"].tobytes(), z["offsets"]
        for k, row in enumerate(z["rows"]):
            i = position.setdefault(int(row), len(position))
            face = Image.open(io.BytesIO(blob[offsets[k]:offsets[k + 1]])).convert("RGB")
            images[i] = np.asarray(face).transpose(2, 0, 1)
            labels[i], split[i] = z["labels"][k], z["split"][k]
    if len(position) != n:
        raise ValueError(f"{packed}: {len(position)} faces in the parts, {plan_file} says {n}")
    digest = hashlib.sha256(images.tobytes() + labels.tobytes() + split.tobytes()).hexdigest()
    with atomic_dir(cache_out) as tmp:  # replaces only a folder faceedit wrote, else OutputExists
        write_arrays(tmp, images, labels, f"sha256:{digest}", split=split, names=plan["names"],
                     source=f"{plan['source']} ({plan['source_hash']}) as WebP {plan['quality']}")
    return cache_out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack", help="a cache -> pack.json + part-NNN.npz")
    a.add_argument("cache", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--splits", nargs="+", default=["train", "val"], choices=list(SPLITS))
    a.add_argument("--quality", type=int, default=95, help="WebP quality of every face (default 95)")
    a.add_argument("--lossless", action="store_true", help="lossless WebP instead")
    a.add_argument("--part-mib", type=float, default=48,
                   help="largest part, MiB (a call carries 64, the repository's ~10 included)")
    b = sub.add_parser("unpack", help="pack.json + every part -> a cache")
    b.add_argument("packed", type=Path)
    b.add_argument("cache", type=Path)
    args = p.parse_args()
    if args.command == "pack":
        plan = pack(args.cache, args.out, args.splits, None if args.lossless else args.quality, args.part_mib)
        sizes = ", ".join(f"{x['name']} {x['bytes'] / 2**20:.1f} MiB ({x['faces']} faces)" for x in plan["parts"])
        print(f"{args.out}: {plan['faces']} faces at {plan['size']}x{plan['size']} in {sizes}")
    else:
        print(f"wrote {unpack(args.packed, args.cache)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
