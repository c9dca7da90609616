"""The map of the codes during training (the lecture's animation of a VAE's latent space).

While a VAE (or the CVAE) trains, the loop keeps mu of a fixed set of val faces at every validation
(`records/codes_eNNN.npy`, written through the trainer's `records` seam; epoch 0 is before the first
step). Here they are projected to 2-D by ONE projection, the first two principal axes of the last
epoch's codes, so the frames are comparable, and drawn as an animated GIF (Pillow) plus a PNG of the
last frame, each point coloured by whether its face has an attribute the user picks. The circle is
radius 2 of the prior N(0, I) projected on the same axes (an orthonormal projection of N(0, I) is
N(0, I) in 2-D): the frames show the codes packing toward it as the KL term works.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from faceedit.attributes import attribute_index
from faceedit.files import atomic_write_bytes

_FRAME = re.compile(r"codes_e(\d{3,})\.npy")
SIZE, MARGIN = 480, 40
COLOURS = {True: (230, 110, 20), False: (40, 90, 200)}


@dataclass(frozen=True)
class CodeMap:
    gif: Path
    final: Path
    epochs: tuple[int, ...]  # one frame per recorded epoch, in order
    attribute: str
    faces: int


def load_codes(log_dir: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """The recorded codes of a training log: epochs (E,) and codes (E, N, D), epoch order."""
    folder = Path(log_dir) / "records"
    files = sorted((int(m.group(1)), p) for p in folder.glob("codes_e*.npy")
                   if (m := _FRAME.fullmatch(p.name)))
    if not files:
        raise FileNotFoundError(f"{folder}: no codes_eNNN.npy (train with a VAE or CVAE objective, "
                                "which records the codes of the first val faces every epoch)")
    arrays = [np.load(p) for _, p in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: frames of different shapes {sorted(shapes)}")
    return tuple(e for e, _ in files), np.stack(arrays).astype(np.float64)


def projection(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal axes of codes (N, D) -> mean (D,), axes (2, D) orthonormal."""
    mean = codes.mean(axis=0)
    _, _, vt = np.linalg.svd(codes - mean, full_matrices=False)
    return mean, vt[:2]


def project(frames: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(E, N, D) -> (E, N, 2) on the fixed axes."""
    return (frames - mean) @ axes.T


def draw_frame(points: np.ndarray, has: np.ndarray, limits: tuple[float, float, float, float],
               prior_centre: np.ndarray, title: str, legend: str) -> Image.Image:
    """One frame: points (N, 2) coloured by has (N,) bool, within limits (x0, x1, y0, y1)."""
    img = Image.new("RGB", (SIZE, SIZE), "white")
    d = ImageDraw.Draw(img)
    x0, x1, y0, y1 = limits
    scale = (SIZE - 2 * MARGIN) / max(x1 - x0, y1 - y0)

    def px(p: np.ndarray) -> tuple[float, float]:
        return MARGIN + (p[0] - x0) * scale, SIZE - MARGIN - (p[1] - y0) * scale

    cx, cy = px(prior_centre)
    r = 2 * scale
    d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(150, 150, 150), width=1)
    d.rectangle([MARGIN, MARGIN, SIZE - MARGIN, SIZE - MARGIN], outline=(200, 200, 200))
    for flag in (False, True):  # the attribute's faces drawn last, on top
        for p in points[has == flag]:
            x, y = px(p)
            d.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=COLOURS[flag])
    d.text((MARGIN, 10), title, fill="black")
    d.text((MARGIN, SIZE - MARGIN + 12), legend, fill="black")
    return img


def write_map(log_dir: str | Path, labels: np.ndarray, attribute: str,
              out_dir: str | Path | None = None, seconds_per_frame: float = 0.5) -> CodeMap:
    """codemap.gif (one frame per recorded epoch) and codemap_final.png into out_dir (default:
    log_dir/figures), coloured by `attribute`. labels: (N, 40) of the recorded faces, in order
    (the first N of the cache's val split)."""
    k = attribute_index(attribute)
    epochs, frames = load_codes(log_dir)
    E, N, D = frames.shape
    if labels.shape[0] < N or labels.ndim != 2:
        raise ValueError(f"write_map: {N} recorded faces but labels of shape {labels.shape}")
    has = np.asarray(labels[:N, k]) > 0
    mean, axes = projection(frames[-1])
    points = project(frames, mean, axes)  # (E, N, 2)
    prior_centre = (np.zeros(D) - mean) @ axes.T
    lo = np.minimum(np.percentile(points, 1, axis=(0, 1)), prior_centre - 2.2)
    hi = np.maximum(np.percentile(points, 99, axis=(0, 1)), prior_centre + 2.2)
    limits = (lo[0], hi[0], lo[1], hi[1])
    legend = (f"orange: {attribute} ({int(has.sum())}), blue: not ({int((~has).sum())}); "
              "grey circle: radius 2 of N(0, I)")
    images = [draw_frame(points[i], has, limits, prior_centre,
                         f"codes of {N} val faces, epoch {e} (axes: PCA of the last epoch)", legend)
              for i, e in enumerate(epochs)]
    out = Path(out_dir) if out_dir is not None else Path(log_dir) / "figures"
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 * seconds_per_frame), loop=0)
    gif, final = out / "codemap.gif", out / "codemap_final.png"
    atomic_write_bytes(gif, buf.getvalue())
    buf = io.BytesIO()
    images[-1].save(buf, format="PNG")
    atomic_write_bytes(final, buf.getvalue())
    return CodeMap(gif, final, epochs, attribute, N)


def write_map_for_cache(log_dir: str | Path, cache, attribute: str,
                        out_dir: str | Path | None = None) -> CodeMap:
    """`write_map` with the labels of the cache's first val faces (the ones the loop recorded)."""
    return write_map(log_dir, cache.labels[cache.indices("val")], attribute, out_dir)


def draw_for_bundle(log_dir: str | Path | None, cache, attribute: str) -> dict[str, Any]:
    """After training (a recipe's `finish`): draw the map of a run whose log holds recorded codes
    and return what the bundle's config.json keeps of it, so the audit report can show the map of
    the model it audits; {} when there is no log, no record or no attribute ("" turns it off)."""
    if log_dir is None or not attribute or not any((Path(log_dir) / "records").glob("codes_e*.npy")):
        return {}
    codemap = write_map_for_cache(log_dir, cache, attribute)
    return {"codemap": {"gif": str(codemap.gif), "final": str(codemap.final),
                        "attribute": codemap.attribute, "epochs": len(codemap.epochs),
                        "faces": codemap.faces}}


@dataclass(frozen=True)
class MapFigure:
    """A bundle's map of the codes, read back for a report."""
    gif: bytes
    attribute: str
    epochs: int  # frames: the codes before training, then after each epoch
    faces: int


def read_bundle_map(meta: dict[str, Any]) -> MapFigure | None:
    """The map a bundle's config.json points to, or None when it records none or the training log
    that holds it is gone (a copied or shipped bundle)."""
    entry = meta.get("codemap")
    if not isinstance(entry, dict) or not Path(str(entry.get("gif", ""))).is_file():
        return None
    return MapFigure(Path(entry["gif"]).read_bytes(), str(entry.get("attribute", "")),
                     int(entry.get("epochs", 0)), int(entry.get("faces", 0)))
