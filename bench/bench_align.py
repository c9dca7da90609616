"""How well `faceedit.align` undoes a misalignment, and what it costs (figures: BENCHMARKS.md).

Accuracy: real val faces of a run's cache (their original 178x218 CelebA files) are each moved by a
random similarity transform (rotation up to --max-angle degrees, scale 0.9-2.2, shifted) into a
larger canvas whose outside is mirrored (a natural-looking border), then aligned again. Reported:
the detection rate; the median PSNR between the 64x64 model crop of the re-aligned face and that
of the original; the landmark error (landmarks found in the moved photo, mapped back, against those
found in the original, in px of the 178x218 frame); and, with --bundle, the median PSNR between
the VAE's reconstructions of the two crops. (The border is the frame's mirror image, blurred: a
sharp mirror puts mirrored copies of the face beside it.) For scale, the same figures for the exact inverse
transform and for the plain centre crop of the moved photo.

Speed: detection + alignment of a ~1-megapixel photo (p50 of --repeats), and the editor's round
trip for it (decode the upload, align, encode, decode, edit, paste back).

    PYTHONPATH=. python bench/bench_align.py --cache runs/base/cache --celeba ../shared/data/celeba \\
        --bundle runs/base/bundle --bank runs/base/bank [--faces 300] [--out runs/align-bench]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceedit.align import (AlignError, Detector, align_photo, apply, canonical_landmarks,
                            invert, warp)
from faceedit.cache import Cache, to_float
from faceedit.images import face_array


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def natural_canvas(frame: np.ndarray, m: np.ndarray, size: tuple[int, int], sigma: float = 12.0) -> np.ndarray:
    """The frame moved by m into a canvas of `size`; outside the frame its mirror image, blurred
    (a plain mirror would put whole mirrored copies of the face around it: more faces than one)."""
    import cv2

    mirrored = warp(frame, m, size)
    inside = cv2.warpAffine(np.ones(frame.shape[:2], np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0)
    inside = cv2.GaussianBlur(inside, (0, 0), 2.0)[..., None]  # a soft seam
    blurred = cv2.GaussianBlur(mirrored, (0, 0), sigma)
    return np.clip(inside * mirrored + (1 - inside) * blurred + 0.5, 0, 255).astype(np.uint8)


def crop64(frame: np.ndarray, size: int = 64) -> np.ndarray:
    return face_array(Image.fromarray(frame), size)  # (3, S, S) uint8: the model's input


def random_move(rng: np.random.Generator, max_angle: float) -> tuple[np.ndarray, tuple[int, int]]:
    """A similarity frame -> canvas and the canvas size (the moved frame plus random margins)."""
    a, s = math.radians(rng.uniform(-max_angle, max_angle)), rng.uniform(0.9, 2.2)
    m = np.array([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]])
    corners = apply(m, np.array([[0, 0], [178, 0], [0, 218], [178, 218]], float))
    lo, hi = corners.min(0), corners.max(0)
    margin_lo, margin_hi = rng.uniform(10, 120, size=2), rng.uniform(10, 120, size=2)
    m[:, 2] = margin_lo - lo
    size = tuple(int(v) for v in np.ceil(hi - lo + margin_lo + margin_hi))
    return m, size


@torch.no_grad()
def reconstruct(model, crops: list[np.ndarray]) -> np.ndarray:
    x = to_float(np.stack(crops))
    out = []
    for i in range(0, len(x), 64):
        out.append(model.reconstruct(x[i: i + 64]))
    return (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def accuracy(args, model) -> dict:
    cache = Cache.open(args.cache)
    rows = cache.indices("val")[: args.faces]
    rng = np.random.default_rng(args.seed)
    detector = Detector()
    canon = canonical_landmarks()
    orig, realigned, exact, centre = [], [], [], []
    lm_err, found, several = [], 0, 0
    for r in rows:
        frame = np.asarray(Image.open(Path(args.celeba) / "img_align_celeba" / cache.names[r]).convert("RGB"))
        m, size = random_move(rng, args.max_angle)
        canvas = natural_canvas(frame, m, size)
        orig.append(crop64(frame))
        exact.append(crop64(warp(canvas, invert(m))))
        centre.append(face_array(Image.fromarray(canvas), 64))
        try:
            got = align_photo(canvas, detector=detector, canonical=canon)
        except AlignError:
            realigned.append(None)
            continue
        found += 1
        several += len(got.faces) > 1
        realigned.append(crop64(got.image))
        ref = detector.detect(frame)
        if ref:
            back = apply(invert(m), got.face.landmarks)  # canvas -> original frame
            lm_err.append(float(np.linalg.norm(back - ref[0].landmarks, axis=1).mean()))
    ok = [i for i, a in enumerate(realigned) if a is not None]
    res = {
        "faces": len(rows), "detected": found, "detection_rate": found / len(rows),
        "photos_with_several_faces_found": several,
        "psnr64_realigned_median": statistics.median(psnr(realigned[i], orig[i]) for i in ok),
        "psnr64_exact_inverse_median": statistics.median(psnr(a, b) for a, b in zip(exact, orig)),
        "psnr64_centre_crop_median": statistics.median(psnr(a, b) for a, b in zip(centre, orig)),
        "landmark_error_px_median": statistics.median(lm_err),
        "landmark_error_px_p90": float(np.percentile(lm_err, 90)),
        "settings": {"max_angle": args.max_angle, "scale": [0.9, 2.2], "seed": args.seed,
                     "cache": str(args.cache)},
    }
    if model is not None:
        r_orig = reconstruct(model, orig)
        r_re = reconstruct(model, [realigned[i] for i in ok])
        r_exact, r_centre = reconstruct(model, exact), reconstruct(model, centre)
        res["vae_psnr_realigned_median"] = statistics.median(psnr(r_re[k], r_orig[i]) for k, i in enumerate(ok))
        res["vae_psnr_exact_inverse_median"] = statistics.median(psnr(a, b) for a, b in zip(r_exact, r_orig))
        res["vae_psnr_centre_crop_median"] = statistics.median(psnr(a, b) for a, b in zip(r_centre, r_orig))
    return res


def speed(args) -> dict:
    """p50 seconds: detection + alignment of a ~1 MP photo; the editor's whole round trip."""
    cache = Cache.open(args.cache)
    name = cache.names[cache.indices("val")[0]]
    frame = np.asarray(Image.open(Path(args.celeba) / "img_align_celeba" / name).convert("RGB"))
    m = np.array([[4.0, 0.0, 300.0], [0.0, 4.0, 60.0]])  # the face enlarged 4x in a 1280x800 photo
    photo = warp(frame, m, (1280, 800))
    # the detector's working size (DETECT_SIDE) against others, interleaved: a side-by-side ratio
    detectors = {side: Detector(detect_side=side) for side in args.sides}
    times: dict[int, list[float]] = {side: [] for side in args.sides}
    for side, d in detectors.items():
        align_photo(photo, detector=d)  # warm up
    for _ in range(args.repeats):
        for side, d in detectors.items():
            t = time.perf_counter()
            align_photo(photo, detector=d)
            times[side].append(time.perf_counter() - t)
    out = {"photo": "1280x800 (1.0 MP)", "repeats": args.repeats, "threads": torch.get_num_threads(),
           "align_p50_s_by_detect_side": {s: statistics.median(t) for s, t in times.items()}}
    if args.bundle and args.bank:
        from faceedit.editor import Editor

        editor = Editor.load(args.bundle, args.bank, threads=None)
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format="JPEG", quality=92)
        data = buf.getvalue()
        editor.encode(data)
        trips, edits = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            enc = editor.encode(data)
            edited = editor.edit(enc.z, {"Smiling": 1.5})
            editor.paste(enc.placement, edited)
            trips.append(time.perf_counter() - t)
            t = time.perf_counter()
            editor.paste(enc.placement, editor.edit(enc.z, {"Smiling": 1.0}))
            edits.append(time.perf_counter() - t)
        out["upload_round_trip_p50_s"] = statistics.median(trips)  # decode, align, encode, edit, paste
        out["slider_edit_with_paste_p50_s"] = statistics.median(edits)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True, help="a run's cache (its val split is used)")
    ap.add_argument("--celeba", type=Path, required=True, help="the CelebA folder the cache was made from")
    ap.add_argument("--bundle", type=Path, default=None, help="a VAE bundle: adds the reconstruction figures")
    ap.add_argument("--bank", type=Path, default=None, help="its bank: adds the editor's round trip")
    ap.add_argument("--faces", type=int, default=300)
    ap.add_argument("--max-angle", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--sides", type=int, nargs="+", default=[640, 1024], help="detector working sizes to time")
    ap.add_argument("--speed-only", action="store_true", help="skip the accuracy figures")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args()
    model = None
    if args.bundle:
        from faceedit.bundle import load_bundle

        model = load_bundle(args.bundle).model.eval()
    result = {"speed": speed(args)} if args.speed_only else {"accuracy": accuracy(args, model), "speed": speed(args)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_align.json").write_text(text)


if __name__ == "__main__":
    main()
