"""Synthetic faces in the CelebA layout: the no-download default.

A fresh clone has no CelebA, so `render_dataset` draws its own faces, 178x218 RGB JPEGs in CelebA's
official layout (`img_align_celeba/000001.jpg`..., `list_attr_celeba.txt`,
`list_eval_partition.txt`), readable by the same reader (`faceedit.celeba`). Each face's 40 labels
are a row drawn (seeded) from real CelebA label rows (the first 20,000 rows of CelebA's
`list_attr_celeba.txt`, shipped as package data), so the rendered set carries CelebA's real joint
distribution and its real biases (e.g. Smiling is more frequent among not-Male rows).

Rendered labels (`RENDERED`), each drawn so that a person sees it:
    Smiling (upturned mouth, smile lines), Mouth_Slightly_Open (dark opening, teeth),
    Male (square jaw, thick brows, short hair; else long hair, lashes), Eyeglasses (frames; some
    tinted), Black_Hair / Blond_Hair / Brown_Hair / Gray_Hair (hair, brow and beard colour; a face
    with none of the four gets auburn hair; two at once are mixed), Bald, Bangs, Receding_Hairline,
    Straight_Hair / Wavy_Hair (strands), Wearing_Hat, Mustache, No_Beard (else a beard), Goatee,
    Sideburns, 5_o_Clock_Shadow (stubble tint), Heavy_Makeup (eye shadow, eyeliner, blush),
    Wearing_Lipstick (red lips), Big_Lips, Pale_Skin, Young (else wrinkles and duller skin and
    hair), Rosy_Cheeks, High_Cheekbones, Big_Nose, Pointy_Nose, Narrow_Eyes, Arched_Eyebrows,
    Bushy_Eyebrows, Bags_Under_Eyes, Chubby, Double_Chin, Oval_Face, Wearing_Earrings,
    Wearing_Necklace, Wearing_Necktie, Blurry (Gaussian blur).
Not rendered (`NOT_RENDERED`): Attractive (a judgement, not a drawable feature). Its labels are
still written, so it is a pure label-noise attribute here. As in photographs, one label can hide
another: a hat covers the hairline (Bald, Receding_Hairline), a full beard hides a goatee,
moustache or stubble, tinted glasses hide the eyes, long hair the earrings now and then.

Nuisance variation that is not a label: skin tone (within the non-pale range), pose (rotation,
shift, size), face proportions, eye colour, hair length, background gradient, lighting direction
and strength, clothing colour, colours of glasses, hats, make-up and jewellery.

Randomness: a face's nuisance draws come from `face_rng(seed, index)` and are made in a fixed order
before any label is looked at, so (a) the output is byte-identical for a seed whatever the number
of workers, and (b) `render_face(labels, seed)` with one label flipped draws the same person with
only that attribute changed (the tests rely on it).
"""

from __future__ import annotations

import gzip
import json
import math
import multiprocessing
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from faceedit.attributes import ATTRIBUTES
from faceedit.files import atomic_dir

WIDTH, HEIGHT = 178, 218  # CelebA's aligned-and-cropped image size
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)  # train / val / test
JPEG_QUALITY = 90
LABEL_TABLE = "list_attr_celeba_20k.txt.gz"  # package data: faceedit/data/
IMAGE_DIR, ATTR_FILE, PARTITION_FILE = "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"
RECORD_FILE = "synth.json"
RENDER_VERSION = 1  # bump when the drawing changes: a folder of another version is not reused
_CHUNK = 200  # faces per pool task
_TABLE: np.ndarray | None = None

NOT_RENDERED: tuple[str, ...] = ("Attractive",)
RENDERED: tuple[str, ...] = tuple(a for a in ATTRIBUTES if a not in NOT_RENDERED)

# Supersampling factor. 2 draws at 2x and halves (anti-aliased edges) but costs much more time; the
# 64x64 training crops, downscaled with a filter, do not show the difference, so 1 (the speed goal).
_SS = 1
_CENTRE = (89.0, 121.0)  # face centre (between eyes and mouth) in the 178x218 image
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 40, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 40, endpoint=False))], axis=1)  # (40, 2)
_LABEL_STREAM, _SPLIT_STREAM, _FACE_STREAM = 0, 1, 2

Color = tuple[int, int, int]

_HAIR: dict[str, Color] = {
    "Black_Hair": (28, 22, 22), "Blond_Hair": (222, 186, 112), "Brown_Hair": (105, 66, 38),
    "Gray_Hair": (172, 170, 168),
}
_AUBURN: Color = (146, 62, 34)  # a face labelled with none of the four hair colours
_SKIN_DARK, _SKIN_LIGHT, _SKIN_PALE = (92, 58, 40), (238, 196, 164), (252, 230, 226)


@dataclass(frozen=True)
class SynthConfig:
    """What `faceedit synth` renders (the arguments of `render_dataset`)."""

    n: int = field(default=20000, metadata={
        "help": "faces to render; rows come from 20,000 real CelebA label rows, repeated beyond that"})
    seed: int = field(default=0, metadata={"help": "seeds the labels, the split and every face"})
    workers: int | None = field(default=None, metadata={
        "help": "processes (default: all cores); the output is the same for any number"})


class SynthError(ValueError):
    """A bad argument to the renderer, or an output folder that would be clobbered."""


# ---------------------------------------------------------------------------- the dataset


def render_dataset(out_dir: str | Path, n: int, seed: int = 0, workers: int | None = None,
                   overwrite: bool = False, progress: bool = False) -> Path:
    """Render `n` faces into a CelebA-layout folder at `out_dir`; returns its path.

    Writes img_align_celeba/000001.jpg... (178x218 RGB JPEG), list_attr_celeba.txt (CelebA's format:
    a count line, the 40 names, `file v1 ... v40` with 1/-1), list_eval_partition.txt (a seeded
    90/5/5 train/val/test split) and synth.json (how it was made). The folder appears complete or
    not at all. Byte-identical for a seed whatever `workers` is (default: all cores). A folder that
    already holds this exact render (same n, seed and renderer version) is returned as it is; any
    other existing folder is an error unless `overwrite`. Workers are spawned processes: a script
    that calls this needs the usual `if __name__ == "__main__":` guard.
    """
    out_dir = Path(out_dir)
    if n < 1 or seed < 0 or (workers is not None and workers < 1):
        raise SynthError(f"render_dataset: need n >= 1, seed >= 0 and workers >= 1 (or None),"
                         f" got n={n}, seed={seed}, workers={workers}")
    record = _record(n, seed)
    if out_dir.exists() and not overwrite:
        if _same_render(out_dir, record):
            return out_dir
        raise SynthError(f"{out_dir} exists and is not this render (n={n}, seed={seed});"
                         " choose another folder or pass overwrite=True (--overwrite)")
    labels = sample_labels(n, seed)  # (n, 40) int8 0/1
    split = carve_partition(n, seed)  # (n,) uint8 0/1/2
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp made it owner-only; a dataset is for every reader
        (tmp / IMAGE_DIR).mkdir()
        _render_all(tmp / IMAGE_DIR, labels, seed, workers, progress)
        (tmp / ATTR_FILE).write_text(attr_file_text(files, labels), newline="")
        (tmp / PARTITION_FILE).write_text(partition_file_text(files, split), newline="")
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out_dir


def _record(n: int, seed: int) -> dict:
    return {"generator": "faceedit.synth", "version": RENDER_VERSION, "count": n, "seed": seed,
            "label_source": f"faceedit/data/{LABEL_TABLE}: the first 20,000 rows of CelebA's "
                            "list_attr_celeba.txt, rows drawn without replacement (per pass)",
            "split_fractions": list(SPLIT_FRACTIONS), "image_size": [WIDTH, HEIGHT],
            "rendered": list(RENDERED), "not_rendered": list(NOT_RENDERED)}


def _same_render(out_dir: Path, record: dict) -> bool:
    try:
        found = json.loads((out_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return found == record and len(list((out_dir / IMAGE_DIR).glob("*.jpg"))) == record["count"]


def _render_all(image_dir: Path, labels: np.ndarray, seed: int, workers: int | None,
                progress: bool) -> None:
    """Render every face into `image_dir`, in chunks over a process pool (spawned: safe beside
    threads that torch or Ray may have started)."""
    n = len(labels)
    workers = workers or len(os.sched_getaffinity(0))
    chunk = min(_CHUNK, -(-n // (4 * workers)))  # a few tasks per worker, for balance
    tasks = [(str(image_dir), seed, start, labels[start:start + chunk]) for start in range(0, n, chunk)]
    workers = min(workers, len(tasks))
    bar = _progress_bar(n, progress)
    if workers == 1:
        for task in tasks:
            bar.update(_render_chunk(task))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_render_chunk, tasks):
                bar.update(done)
    bar.close()


def _render_chunk(task: tuple[str, int, int, np.ndarray]) -> int:
    image_dir, seed, start, labels = task
    for j, row in enumerate(labels):
        img = render_face(row, face_rng(seed, start + j))
        img.save(os.path.join(image_dir, f"{start + j + 1:06d}.jpg"), "JPEG", quality=JPEG_QUALITY)
    return len(labels)


def _progress_bar(n: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=n, unit="face", desc="synth", disable=not enabled)


def load_label_table() -> np.ndarray:
    """The shipped real CelebA label rows: int8 (20000, 40) 0/1, columns in ATTRIBUTES order."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _read_gzip_table(Path(__file__).with_name("data") / LABEL_TABLE)
    return _TABLE


def _read_gzip_table(source: Path) -> np.ndarray:
    """Parse a gzipped list_attr_celeba.txt with `faceedit.celeba.read_attr_file` (which reads
    plain text from a path: the table is unpacked to a temporary file first)."""
    from faceedit.celeba import read_attr_file

    with tempfile.TemporaryDirectory(prefix="faceedit-synth-") as tmp:
        plain = Path(tmp) / "list_attr_celeba.txt"
        plain.write_bytes(gzip.decompress(source.read_bytes()))
        names, labels = read_attr_file(plain)  # (N, 40) int8 0/1, file column order
    return np.ascontiguousarray(labels[:, [names.index(a) for a in ATTRIBUTES]])


def sample_labels(n: int, seed: int) -> np.ndarray:
    """(n, 40) int8 0/1: rows of the shipped CelebA table, drawn without replacement in passes of
    the whole table (so n <= 20000 draws distinct real rows), seeded by `seed` alone."""
    table = load_label_table()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LABEL_STREAM,)))
    passes = -(-n // len(table))
    order = np.concatenate([rng.permutation(len(table)) for _ in range(passes)])[:n]
    return table[order]


def carve_partition(n: int, seed: int) -> np.ndarray:
    """(n,) uint8 0/1/2 = train/val/test: a seeded shuffle cut 90/5/5 (val, test rounded down,
    at least one each once n >= 3)."""
    n_val = n_test = int(n * SPLIT_FRACTIONS[1]) if n >= 20 else min(1, max(0, (n - 1) // 2))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_STREAM,)))
    split = np.zeros(n, dtype=np.uint8)
    order = rng.permutation(n)
    split[order[:n_val]] = 1
    split[order[n_val:n_val + n_test]] = 2
    return split


def attr_file_text(files: list[str], labels: np.ndarray) -> str:
    """CelebA's list_attr_celeba.txt: count line, names line, `file` + ` %2d` per value, CRLF."""
    head = [str(len(files)), " ".join(ATTRIBUTES) + " "]
    signed = np.where(labels > 0, " 1", "-1")  # (n, 40)
    body = [f + " " + " ".join(row) for f, row in zip(files, signed.tolist())]
    return "\r\n".join(head + body) + "\r\n"


def partition_file_text(files: list[str], split: np.ndarray) -> str:
    return "".join(f"{f} {int(s)}\r\n" for f, s in zip(files, split))


# ---------------------------------------------------------------------------- the person


@dataclass(frozen=True)
class Person:
    """Everything about a face that is not a label: drawn once per face, before any label is read."""

    skin_tone: float  # 0 = darkest, 1 = lightest non-pale skin
    skin_hue: np.ndarray  # (3,) multiplicative jitter of the skin colour
    angle: float  # degrees, counter-clockwise
    scale: float
    shift: tuple[float, float]  # pixels
    width: float  # face half-width jitter (canonical pixels)
    height: float
    eye_colour: Color
    hair_shade: float  # multiplies the hair colour
    hair_length: float  # canonical y where long hair ends
    wave_phase: float
    background: np.ndarray  # (4, 3) corner colours
    light_dir: float  # radians
    light_strength: float
    shirt: Color
    accessory: np.ndarray  # (6, 3) colours: glasses, hat, lipstick, eye shadow, jewellery, tie
    glasses_round: bool
    sunglasses: bool
    hat_beanie: bool
    mouth_y: float


def face_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of face `index` of a dataset rendered with `seed` (independent of workers)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_FACE_STREAM, index)))


def draw_person(rng: np.random.Generator) -> Person:
    """A fixed sequence of draws from `rng`: the same generator state gives the same person."""
    u = rng.random(12)
    colours = rng.integers(0, 256, size=(12, 3))
    return Person(
        skin_tone=float(rng.beta(3.5, 1.2)),
        skin_hue=1.0 + rng.uniform(-0.05, 0.05, size=3),
        angle=float(np.clip(rng.normal(0.0, 4.0), -9.0, 9.0)),
        scale=float(1.02 + 0.14 * u[0]),
        shift=(float(rng.uniform(-6, 6)), float(rng.uniform(-5, 5))),
        width=float(rng.uniform(-2.0, 2.0)),
        height=float(rng.uniform(-2.5, 2.5)),
        eye_colour=[(70, 45, 25), (40, 28, 20), (70, 110, 150), (80, 110, 70)][int(u[1] * 4)],
        hair_shade=float(0.8 + 0.4 * u[2]),
        hair_length=float(30 + 55 * u[3]),
        wave_phase=float(2 * np.pi * u[4]),
        background=_background_colours(colours[:4], u[5]),
        light_dir=float(2 * np.pi * u[6]),
        light_strength=float(0.05 + 0.30 * u[7]),
        shirt=tuple(int(c) for c in colours[4]),
        accessory=colours[6:12].copy(),
        glasses_round=bool(u[8] < 0.4),
        sunglasses=bool(u[9] < 0.15),
        hat_beanie=bool(u[10] < 0.35),
        mouth_y=float(27 + 2.5 * u[11]),
    )


def _background_colours(raw: np.ndarray, mix: float) -> np.ndarray:
    """(4, 3) corner colours: random hues pulled towards one grey level, like blurred photo backdrops."""
    grey = 40 + 190 * mix
    return (0.35 * raw + 0.65 * grey).astype(np.uint8)


# ---------------------------------------------------------------------------- the pen


class _Pen:
    """Draws in canonical face coordinates (origin at the face centre, y down, ~178x218 pixel units),
    mapped by the person's pose (rotation, scale, shift) onto the supersampled canvas."""

    def __init__(self, img: Image.Image, person: Person) -> None:
        self.draw = ImageDraw.Draw(img, "RGBA")
        a, s = math.radians(-person.angle), person.scale * _SS
        self.m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
        self.t = np.array([_CENTRE[0] + person.shift[0], _CENTRE[1] + person.shift[1]]) * _SS
        self.s = s

    def _xy(self, pts: np.ndarray) -> list[float]:
        out = np.asarray(pts, dtype=np.float64) @ self.m.T + self.t  # (K, 2) -> (K, 2)
        return out.ravel().tolist()  # PIL takes a flat [x0, y0, x1, y1, ...]

    def poly(self, pts: np.ndarray, fill: tuple) -> None:
        self.draw.polygon(self._xy(pts), fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: tuple) -> None:
        self.poly(_CIRCLE * (rx, ry) + (cx, cy), fill)

    def ring(self, cx: float, cy: float, rx: float, ry: float, fill: tuple, width: float) -> None:
        pts = _CIRCLE * (rx, ry) + (cx, cy)
        self.line(np.vstack([pts, pts[:1]]), fill, width)

    def line(self, pts: np.ndarray, fill: tuple, width: float) -> None:
        self.draw.line(self._xy(pts), fill=fill, width=max(1, round(width * self.s)), joint="curve")


def _shade(c, k: float, alpha: int = 255) -> tuple[int, int, int, int]:
    """Colour `c` times `k` (clipped), with alpha."""
    r, g, b = (int(min(255, max(0, v * k))) for v in c[:3])
    return (r, g, b, alpha)


def _mix(a, b, t: float) -> Color:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a[:3], b[:3]))


def _mirror(pts: list[tuple[float, float]]) -> np.ndarray:
    """Left-side points -> (K, 2) array with their mirror images appended in reverse order."""
    left = np.array(pts, dtype=np.float64)
    right = left[::-1] * (-1.0, 1.0)
    return np.vstack([left, right])


# ---------------------------------------------------------------------------- one face


@dataclass(frozen=True)
class _Look:
    """Colours and proportions derived from the labels and the person."""

    skin: Color
    hair: Color
    brow: Color
    lips: Color
    rx: float  # face half-width
    ry_top: float
    ry_bot: float
    jaw: float  # superellipse exponent of the jaw (2 = round, higher = square)


def _look(a: dict[str, bool], p: Person) -> _Look:
    base = _SKIN_PALE if a["Pale_Skin"] else _mix(_SKIN_DARK, _SKIN_LIGHT, p.skin_tone)
    skin = tuple(min(255, v * h) for v, h in zip(base, p.skin_hue))
    colours = [_HAIR[k] for k in _HAIR if a[k]]
    hair = tuple(np.mean(colours, axis=0)) if colours else _AUBURN
    hair = _shade(hair, p.hair_shade)[:3]
    if not a["Young"]:  # age: duller skin, a touch of grey in the hair
        skin = _mix(skin, (160, 150, 145), 0.2)
        hair = _mix(hair, (160, 160, 160), 0.15)
    brow = _shade(hair, 0.55 if a["Blond_Hair"] or a["Gray_Hair"] else 0.8)[:3]
    if a["Wearing_Lipstick"]:
        lips = tuple(int(min(255, v)) for v in p.accessory[2] * 0.25 + (185, 20, 45))
    else:
        lips = _mix(skin, (170, 70, 75), 0.55)
    rx = 37.0 + p.width + 2.0 * a["Male"] + 5.0 * a["Chubby"] - 2.5 * a["Oval_Face"]
    ry_bot = 51.0 + p.height + 2.0 * a["Male"] + 4.0 * a["Oval_Face"]
    return _Look(skin=tuple(int(v) for v in skin), hair=hair, brow=brow, lips=lips, rx=rx,
                 ry_top=50.0 + p.height, ry_bot=ry_bot, jaw=2.9 if a["Male"] else 2.0)


def render_face(labels: np.ndarray, rng: np.random.Generator | int) -> Image.Image:
    """One synthetic face, a 178x218 RGB image.

    labels: (40,) 0/1 (or -1/1) in ATTRIBUTES order. rng: a generator or an int seed; the person
    (everything that is not a label) is drawn from it first, so the same seed with one label flipped
    renders the same person with only that attribute changed.
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.shape != (len(ATTRIBUTES),):
        raise SynthError(f"labels: expected shape ({len(ATTRIBUTES)},), got {labels.shape}")
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    p = draw_person(rng)
    a = {name: bool(v > 0) for name, v in zip(ATTRIBUTES, labels.tolist())}
    look = _look(a, p)
    img = _background(p)
    pen = _Pen(img, p)
    for part in _PARTS:
        part(pen, a, p, look)
    if _SS > 1:
        img = img.reduce(_SS)  # (SS*H, SS*W) -> (H, W)
    img = _lighting(img, p)
    if a["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(1.6))
    return img


def _background(p: Person) -> Image.Image:
    """A smooth four-corner gradient at the supersampled size (interpolated at 1x: it is smooth)."""
    corners = Image.fromarray(p.background.reshape(2, 2, 3))
    small = corners.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    return small if _SS == 1 else small.resize((WIDTH * _SS, HEIGHT * _SS), Image.Resampling.NEAREST)


def _lighting(img: Image.Image, p: Person) -> Image.Image:
    """Darken the image linearly away from the light direction (a soft side light)."""
    yy, xx = np.mgrid[-1:1:2j, -1:1:2j]  # (2, 2) corner coordinates
    proj = xx * math.cos(p.light_dir) + yy * math.sin(p.light_dir)
    gain = 255 * (1 - p.light_strength * (0.5 - 0.35 * proj))
    gain_img = Image.fromarray(gain.astype(np.uint8)).resize(img.size, Image.Resampling.BILINEAR)
    return Image.composite(img, Image.new("RGB", img.size), gain_img)


# ---------------------------------------------------------------------------- parts, back to front


def _body(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    neck = _shade(look.skin, 0.82)
    pen.poly(np.array([(-15, 20), (15, 20), (17, 80), (-17, 80)]), neck)
    shoulders = _mirror([(-16, 58), (-45, 66), (-80, 78), (-100, 110)])
    pen.poly(shoulders, (*p.shirt, 255))
    if a["Wearing_Necktie"]:
        pen.poly(_mirror([(-16, 56), (-9, 72), (0, 62)]), (245, 245, 245, 255))  # collar
        tie = tuple(p.accessory[5])
        pen.poly(np.array([(-4, 60), (4, 60), (3, 66), (-3, 66)]), (*tie, 255))  # knot
        pen.poly(np.array([(-3, 66), (3, 66), (7, 100), (0, 108), (-7, 100)]), (*tie, 255))
    if a["Wearing_Necklace"]:
        t = np.linspace(-1, 1, 13)
        beads = np.stack([15 * t, 66 - 9 * (1 - t ** 2)], axis=1)  # (13, 2) chain over the collarbone
        metal = tuple(p.accessory[4] // 3 + (170, 150, 60))
        for x, y in beads:
            pen.ellipse(x, y, 1.7, 1.7, _shade(metal, 1.0))


def _back_hair(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    if a["Male"] or a["Bald"]:
        return
    w, bottom = look.rx + 11, max(p.hair_length, 25.0)
    top = _CIRCLE[20:] * (w, 66) + (0, -14)  # upper half of an ellipse, left -> right
    flare = 6.0 if a["Wavy_Hair"] else 2.0
    sides = np.array([(w + flare, bottom), (-w - flare, bottom)])
    pen.poly(np.vstack([top, (w, -14), sides, (-w, -14)]), _shade(look.hair, 1.0))
    _strands(pen, a, look, xs=(-w + 4, -w + 9, w - 9, w - 4), y0=-20, y1=bottom - 4, phase=p.wave_phase)


def _strands(pen: _Pen, a: dict, look: _Look, xs, y0: float, y1: float, phase: float) -> None:
    """Straight_Hair: straight strands; Wavy_Hair: sine strands; neither: none."""
    if not (a["Straight_Hair"] or a["Wavy_Hair"]):
        return
    y = np.linspace(y0, y1, 14)
    amp = 3.0 if a["Wavy_Hair"] else 0.0
    dark = sum(look.hair) < 250
    colour = (*_mix(look.hair, (235, 225, 210), 0.3), 220) if dark else _shade(look.hair, 0.6, 220)
    for k, x in enumerate(xs):
        pts = np.stack([x + amp * np.sin(y / 5.0 + phase + k), y], axis=1)
        pen.line(pts, colour, 1.3)


def _head(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    skin = _shade(look.skin, 1.0)
    for s in (-1, 1):  # ears
        pen.ellipse(s * (look.rx + 1), -6, 4.5, 9.5, _shade(look.skin, 0.9))
    pen.ellipse(0, -14, look.rx + 1, 53, skin)  # cranium (seen where bald or receding)
    pen.poly(_face_outline(look), skin)
    if a["Double_Chin"]:
        pen.poly(_mirror([(-20, look.ry_bot - 8), (-12, look.ry_bot + 4), (0, look.ry_bot + 6)]), skin)
        pen.line(np.array([(-12, look.ry_bot + 1), (0, look.ry_bot + 3.5), (12, look.ry_bot + 1)]),
                 _shade(look.skin, 0.75, 160), 1.0)
    if a["Wearing_Earrings"]:
        metal = _shade(p.accessory[4] // 3 + (170, 150, 60), 1.0)
        for s in (-1, 1):
            pen.ring(s * (look.rx + 2), 9, 3.6, 4.4, metal, 1.8)


def _face_outline(look: _Look) -> np.ndarray:
    """(K, 2) face polygon: an elliptic forehead and a superellipse jaw (square for Male)."""
    t = np.linspace(0, np.pi, 24)
    top = np.stack([-look.rx * np.cos(t), -look.ry_top * np.sin(t)], axis=1)  # left -> right, over the top
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / look.jaw
    taper = 1 - (0.22 if look.jaw < 2.5 else 0.10) * s ** 4
    bottom = np.stack([look.rx * np.sign(c) * np.abs(c) ** e * taper, look.ry_bot * s ** e], axis=1)
    return np.vstack([top, bottom])  # right -> left under the chin


def _facial_hair(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    rx, ry = look.rx, look.ry_bot
    beard_colour = _shade(look.hair, 0.85)
    if a["5_o_Clock_Shadow"]:
        pen.poly(_beard_shape(rx, ry, 1.0), (60, 55, 70, 80))
    if not a["No_Beard"]:
        pen.poly(_beard_shape(rx + 1.5, ry + 3, 0.0), beard_colour)
    if a["Goatee"]:
        pen.poly(_mirror([(-6, p.mouth_y + 5), (-11, p.mouth_y + 12), (-7, ry + 2)]), beard_colour)
    if a["Sideburns"]:
        for s in (-1, 1):
            pen.poly(np.array([(s * (rx - 0.5), -20), (s * (rx - 7), -20), (s * (rx - 6), 8),
                               (s * (rx - 1), 12)]), beard_colour)


def _beard_shape(rx: float, ry: float, inset: float) -> np.ndarray:
    """(K, 2) lower-face polygon from ear to ear under the chin; its top edge dips under the nose."""
    t = np.linspace(0, np.pi, 17)
    outer = np.stack([(rx - inset) * np.cos(t), (ry - inset) * np.sin(t)], axis=1)  # right -> left
    inner = np.array([(-rx + 5, -4), (-22, 8), (-14, 16), (0, 15), (14, 16), (22, 8), (rx - 5, -4)])
    return np.vstack([outer, inner])


def _eyes(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    ry = 2.0 if a["Narrow_Eyes"] else 3.8
    ry *= 0.85 if a["Smiling"] else 1.0
    for s in (-1, 1):
        cx, cy = s * 18, -12
        if a["Heavy_Makeup"]:
            pen.ellipse(cx, cy - 3, 9.5, 6.0, (*p.accessory[3] // 2 + (60, 20, 60), 185))
        if a["Bags_Under_Eyes"]:
            pen.line(np.array([(cx - 6, cy + 5), (cx, cy + 7.5), (cx + 6, cy + 5)]), (80, 50, 70, 180), 2.2)
        pen.ellipse(cx, cy, 7.5, ry, (242, 238, 232, 255))
        pen.ellipse(cx, cy, 3.4, min(3.4, ry), (*p.eye_colour, 255))
        pen.ellipse(cx, cy, 1.5, min(1.5, ry * 0.6), (10, 10, 12, 255))
        lid = np.array([(cx - 8, cy + 0.5), (cx - 4, cy - ry), (cx + 4, cy - ry), (cx + 8, cy + 0.5)])
        pen.line(lid, (35, 25, 25, 255), 2.4 if a["Heavy_Makeup"] else 1.2)
        if not a["Male"]:  # lashes at the outer corner
            pen.line(np.array([(cx + s * 7.5, cy - 0.5), (cx + s * 10, cy - 2.5)]), (30, 20, 20, 255), 1.0)


def _brows(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    width = (2.0 + 1.2 * a["Male"]) + 2.4 * a["Bushy_Eyebrows"]
    peak = -26.5 if a["Arched_Eyebrows"] else -23.5
    for s in (-1, 1):
        pts = np.array([(s * 10, -21.5), (s * 16, peak + 1), (s * 21, peak), (s * 27, -20.5)])
        pen.line(pts, _shade(look.brow, 1.0), width)


def _nose(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    k = 1.6 if a["Big_Nose"] else 1.0
    tip = 14.0 if a["Pointy_Nose"] else 10.0
    shadow = _shade(look.skin, 0.7, 170)
    pen.line(np.array([(-3 * k, -8), (-4 * k, 3), (-5 * k, 8)]), _shade(look.skin, 0.85, 120), 1.2)
    if a["Pointy_Nose"]:
        pen.poly(np.array([(-3 * k, 6), (0, tip + 1), (3 * k, 6)]), _shade(look.skin, 1.08, 200))
    pen.line(np.array([(-6 * k, 8), (-3 * k, tip), (0, tip + 1), (3 * k, tip), (6 * k, 8)]), shadow, 1.2)
    for s in (-1, 1):
        pen.ellipse(s * 3.2 * k, tip - 1.5, 1.8 * k, 1.0 * k, (60, 35, 30, 200))


def _cheeks(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    for s in (-1, 1):
        if a["High_Cheekbones"]:
            pen.ellipse(s * 24, 1, 8, 3, (255, 255, 255, 55))
            pen.line(np.array([(s * 30, 8), (s * 25, 14), (s * 19, 17)]), _shade(look.skin, 0.75, 110), 1.4)
        if a["Rosy_Cheeks"]:
            pen.ellipse(s * 23, 9, 8, 5.5, (215, 50, 70, 150))
        if a["Heavy_Makeup"]:
            pen.ellipse(s * 25, 6, 9, 5, (200, 70, 110, 75))


def _wrinkles(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    fold = _shade(look.skin, 0.62, 190)
    if a["Smiling"]:  # smile lines from the nose wings round the mouth corners
        for s in (-1, 1):
            pen.line(np.array([(s * 10, 10), (s * 17, 20), (s * 19, 30)]), fold, 1.3)
    if a["Young"]:
        return
    for y in (-32.0, -37.0, -42.0):  # forehead
        pen.line(np.array([(-17, y + 1.5), (0, y - 0.5), (17, y + 1.5)]), fold, 1.3)
    for s in (-1, 1):
        pen.line(np.array([(s * 9, 11), (s * 15, 21), (s * 16, 31)]), fold, 1.4)  # folds
        pen.line(np.array([(s * 13, -6), (s * 18, -4.5), (s * 24, -6)]), fold, 1.1)  # lower lids
        pen.line(np.array([(s * 14, 40), (s * 17, 47)]), fold, 1.1)  # jowls
        for dy in (-2.5, 0.5, 3.5):  # crow's feet
            pen.line(np.array([(s * 27, -12 + dy * 0.3), (s * 31, -12 + dy)]), fold, 1.0)


def _mouth(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    y0 = p.mouth_y
    w = (16.0 if a["Smiling"] else 12.0) + 1.0 * a["Big_Lips"]
    lip = 2.2 if a["Big_Lips"] else 1.0
    lips, dark = _shade(look.lips, 1.0), (55, 18, 22, 255)
    x = np.linspace(-w, w, 15)
    lift = -7.0 * (x / w) ** 2 if a["Smiling"] else 0.8 * (x / w) ** 2 - 0.8
    curve = np.stack([x, y0 + lift], axis=1)  # (15, 2) the line where the lips meet, corner to corner
    depth = (9.0 if a["Smiling"] else 6.0) * (1 - (x / w) ** 2) * a["Mouth_Slightly_Open"]
    lower = np.stack([x, y0 + lift + depth], axis=1)
    env = 1 - (x / w) ** 2
    upper_lip = np.vstack([curve, (curve + np.stack([0 * x, -(1.0 + 2.6 * lip) * env], 1))[::-1]])
    lower_lip = np.vstack([lower, (lower + np.stack([0 * x, (1.5 + 3.2 * lip) * env], 1))[::-1]])
    pen.poly(upper_lip, lips)
    pen.poly(lower_lip, lips)
    if a["Mouth_Slightly_Open"]:
        pen.poly(np.vstack([curve, lower[::-1]]), dark)
        teeth = curve + np.stack([0 * x, np.minimum(depth * 0.45, 2.6)], 1)
        pen.poly(np.vstack([curve, teeth[::-1]]), (238, 234, 222, 255))
    else:
        pen.line(curve, dark, 2.4 if a["Smiling"] else 1.4)
    if a["Mustache"]:
        top = np.stack([x * 1.05, y0 + lift * 0.5 - 4.5 - 1.5 * env], 1)
        pen.poly(np.vstack([top, (top + np.stack([0 * x, -5.0 * env - 1.5], 1))[::-1]]),
                 _shade(look.hair, 0.85))


def _front_hair(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    if a["Bald"]:
        for s in (-1, 1):  # a fringe over the ears
            pen.poly(np.array([(s * (look.rx + 3), -24), (s * (look.rx - 3), -24), (s * (look.rx - 2), -4),
                               (s * (look.rx + 3), -2)]), _shade(look.hair, 1.0))
        return
    rx = look.rx + (3 if a["Male"] else 6)
    crown = _CIRCLE[20:] * (rx, 62 if a["Male"] else 64) + (0, -16)  # left -> right over the top
    hairline = -52.0 if a["Receding_Hairline"] else -42.0
    temple = -8.0 if a["Male"] else 6.0
    m = 6.0 if a["Receding_Hairline"] else 0.0  # the receding "M"
    inner = [(rx, -16), (rx - 1, temple), (look.rx - 5, temple), (look.rx - 7, hairline + 10 - m),
             (18, hairline + m), (0, hairline), (-18, hairline + m), (-look.rx + 7, hairline + 10 - m),
             (-look.rx + 5, temple), (-rx + 1, temple), (-rx, -16)]
    pen.poly(np.vstack([crown, inner]), _shade(look.hair, 1.0))
    if a["Bangs"]:
        xs = np.linspace(-look.rx + 2, look.rx - 2, 11)
        tips = np.stack([xs, -27.0 - 3.5 * (np.arange(11) % 2)], 1)
        pen.poly(np.vstack([[(-look.rx + 1, hairline - 4)], tips, [(look.rx - 1, hairline - 4)]]),
                 _shade(look.hair, 0.95))
    _strands(pen, a, look, xs=(-12, -4, 4, 12), y0=-74, y1=hairline - 2, phase=p.wave_phase)


def _hat(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    if not a["Wearing_Hat"]:
        return
    colour = _shade(p.accessory[1], 1.0)
    rx = look.rx + 6
    if p.hat_beanie:
        dome = _CIRCLE[20:] * (rx, 50) + (0, -38)
        pen.poly(np.vstack([dome, [(rx, -34), (-rx, -34)]]), colour)
        pen.poly(np.array([(-rx, -40), (rx, -40), (rx, -32), (-rx, -32)]), _shade(p.accessory[1], 0.75))
    else:
        pen.poly(np.array([(-rx + 4, -94), (rx - 4, -94), (rx, -44), (-rx, -44)]), colour)
        pen.poly(np.array([(-rx, -52), (rx, -52), (rx, -46), (-rx, -46)]), _shade(p.accessory[1], 0.6))
        pen.ellipse(0, -44, rx + 20, 6, _shade(p.accessory[1], 0.85))


def _glasses(pen: _Pen, a: dict, p: Person, look: _Look) -> None:
    if not a["Eyeglasses"]:
        return
    frame = _shade(p.accessory[0] // 4, 1.0)
    for s in (-1, 1):
        cx, cy = s * 18, -12
        if p.sunglasses:
            pen.ellipse(cx, cy, 11, 8, (20, 20, 30, 210))
        if p.glasses_round:
            pen.ring(cx, cy, 11, 9, frame, 1.8)
        else:
            box = np.array([(cx - 11, cy - 8), (cx + 11, cy - 8), (cx + 10, cy + 8), (cx - 10, cy + 8),
                            (cx - 11, cy - 8)])
            pen.line(box, frame, 1.8)
        pen.line(np.array([(s * 29, cy - 4), (s * (look.rx + 1), cy - 5)]), frame, 1.8)  # temple
    pen.line(np.array([(-7, -14), (0, -15.5), (7, -14)]), frame, 1.6)  # bridge


_PARTS = (_back_hair, _body, _head, _facial_hair, _cheeks, _wrinkles, _eyes, _brows, _nose, _mouth,
          _front_hair, _hat, _glasses)
