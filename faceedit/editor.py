"""The face editor's session logic, as plain functions over one loaded bundle and bank.

A photo is cropped like the training cache and encoded once, to z = mu of q(z | x); every edit after
that is z + sum_k alpha_k v_k (White 2016, "Sampling Generative Networks") followed by one decode,
so moving a slider costs a single decoder pass. With a conditional VAE loaded (faceedit/cvae.py), the
method "conditional" edits the labels instead: the session's latent is then the VAE's z followed by
the CVAE's code and labels [mu_c, y] (y as +1 / -1, inferred by its q(y | x) for a photo, the
dataset's labels for an example face), a slider alpha changes y_a by 2 alpha (one flip per unit)
and the CVAE decodes the same mu_c with the new labels. The caller (the Gradio app in `ui/`, a script, a
test) keeps z; nothing here holds per-user state.

Images handed out are uint8 (H, W, 3) arrays, the layout image widgets and PIL expect; the model's
tensors stay float32 (B, 3, S, S) in [0, 1] inside.

A photo is aligned to CelebA's geometry first (`faceedit.align`: the face detected, rotated and
scaled so that eyes, nose and mouth sit where CelebA's do); the edit can then be put back into the
photo at its own resolution (`Editor.paste`). The plain centre crop of earlier versions is used
only when asked for (`align=False`).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from faceedit.attributes import ATTRIBUTES, FEATURED, attribute_index
from faceedit.bank import AttributeBank, check_built_from
from faceedit.bundle import Bundle, load_bundle
from faceedit.cache import Cache, CacheError, to_float
from faceedit.edit import edit as edit_latent
from faceedit.edit import slerp
from faceedit.files import atomic_write_bytes
from faceedit.align import Alignment, AlignError, align_photo, draw_detection, paste_back
from faceedit.images import crop_box, face_array, load_image, open_photo

EDIT_METHODS: tuple[str, ...] = ("balanced", "naive", "projection")  # what the page offers
COMPARE_METHODS: tuple[str, ...] = ("naive", "balanced")  # White 2016 Figure 7, side by side
STRENGTH_LIMIT = 3.0  # |alpha| the sliders allow, in units of the vector's length
PREVIEW_SIDE = 256  # longest side of the crop preview
UPSCALE = 4  # download factor: 64 -> 256
MAX_STEPS = 16  # interpolation strip length limit
PASTE_MODE = "change"  # paste back the edit's change, not the decoded 64 px face (README, "Real photos")


@dataclass(frozen=True)
class Placement:
    """Where an aligned face came from, so that an edit can be put back into the photo."""

    photo: np.ndarray  # (H, W, 3) uint8: the whole photo, upright, at its own resolution
    alignment: Alignment  # the face's transform photo -> CelebA frame
    reconstruction: np.ndarray  # (S, S, 3) uint8: decode(z) of the unedited face


@dataclass(frozen=True)
class Encoded:
    """One photo, encoded once."""

    preview: np.ndarray  # (h, w, 3) uint8: the whole photo (at most PREVIEW_SIDE) with its crop drawn
    face: np.ndarray  # (S, S, 3) uint8: the crop the model sees
    z: torch.Tensor  # (D,) float32: mu of q(z | x)
    reconstruction: np.ndarray  # (S, S, 3) uint8: decode(z)
    placement: Placement | None = None  # set for an aligned photo: what `Editor.paste` needs
    message: str = ""  # what was found (e.g. several faces), for the page


def to_image(x: torch.Tensor) -> np.ndarray:
    """float (3, S, S) in [0, 1] -> uint8 (S, S, 3)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def upscale(image: np.ndarray, factor: int = UPSCALE) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (factor*H, factor*W, 3), Lanczos (sharper than the model's 64 px)."""
    if factor < 1:
        raise ValueError(f"upscale factor must be >= 1, got {factor}")
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * factor, h * factor), Image.Resampling.LANCZOS))


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def save_downloads(image: np.ndarray, out_dir: str | Path, stem: str = "faceedit",
                   factor: int = UPSCALE) -> tuple[Path, Path]:
    """Write the image at model resolution and upscaled (atomically) -> (path S x S, path upscaled)."""
    out_dir = Path(out_dir)
    h = image.shape[0]
    small, big = out_dir / f"{stem}-{h}px.png", out_dir / f"{stem}-{h * factor}px.png"
    atomic_write_bytes(small, png_bytes(image))
    atomic_write_bytes(big, png_bytes(upscale(image, factor)))
    return small, big


def crop_preview(photo: Image.Image, side: int = PREVIEW_SIDE) -> np.ndarray:
    """The whole photo (RGB, upright: `open_photo`'s), shrunk to at most `side`, with the CelebA
    crop box drawn. -> uint8 (h, w, 3)."""
    width, height = photo.size
    img = photo.copy()
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    scale = img.size[0] / width
    left, top, right, bottom = (v * scale for v in crop_box(width, height))
    draw = ImageDraw.Draw(img)
    line = max(2, round(img.size[0] / 100))
    draw.rectangle((left, top, right - 1, bottom - 1), outline=(255, 196, 0), width=line)
    return np.asarray(img)


def alignment_preview(photo: np.ndarray, alignment: Alignment, side: int = PREVIEW_SIDE) -> np.ndarray:
    """The photo with the faces found, the chosen face's landmarks and its crop outline, beside the
    aligned CelebA frame with the model's crop drawn -> uint8 (h, w, 3)."""
    left = draw_detection(photo, alignment, side=side)
    h = left.shape[0]
    frame = Image.fromarray(alignment.image)
    ImageDraw.Draw(frame).rectangle(tuple(round(v) for v in crop_box(*frame.size)), outline=(0, 200, 255), width=2)
    right = np.asarray(frame.resize((round(frame.width * h / frame.height), h), Image.Resampling.BILINEAR))
    gap = np.full((h, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


class Editor:
    """A loaded VAE bundle and attribute bank, and the operations of the editor page."""

    def __init__(self, bundle: Bundle, bank: AttributeBank, cache: Cache | None = None,
                 threads: int | None = None, n_examples: int = 9, allow_bank_mismatch: bool = False,
                 cvae: Bundle | None = None):
        if threads is not None:
            torch.set_num_threads(max(1, threads))
        self.bundle, self.bank, self.cache = bundle, bank, cache
        self.model = bundle.model.eval()
        cfg = self.model.config
        self.size, self.dim = cfg.image_size, cfg.latent_dim
        self.methods = tuple(m for m in EDIT_METHODS if self._has_method(m))
        if not self.methods:
            raise ValueError(f"bank {bank_path_of(bank)} has none of the methods {', '.join(EDIT_METHODS)}")
        self.cvae = None
        if cvae is not None:
            if cvae.kind != "cvae" or cvae.config.image_size != self.size:
                raise ValueError(f"{cvae.path}: expected a conditional VAE bundle (kind cvae) of "
                                 f"{self.size} px, got kind {cvae.kind!r} of {cvae.config.image_size} px")
            self.cvae = cvae.model.eval()
            self.vae_dim = self.dim
            self.dim += cvae.config.latent_dim + len(cvae.config.condition)  # [z, mu_c, y]
            self.methods += ("conditional",)
        self.example_rows = self._example_rows(n_examples)
        self._check_bank()
        check_built_from(bank, self.model, bundle.path, allow=allow_bank_mismatch)

    @classmethod
    def load(cls, bundle: str | Path, bank: str | Path, cache: str | Path | None = None,
             threads: int | None = None, n_examples: int = 9, allow_bank_mismatch: bool = False,
             cvae: str | Path | None = None) -> "Editor":
        """Load a bundle folder and a bank folder. `cache`: where to take example faces from; by
        default the cache the bundle records it was trained on, when that folder is present. A bank
        built from another model is refused unless allow_bank_mismatch (then a warning)."""
        b = load_bundle(bundle)
        k = AttributeBank.load(bank)
        c = Cache.open(cache) if cache is not None else training_cache(b)  # a named cache must open
        return cls(b, k, c, threads=default_threads() if threads is None else threads,
                   n_examples=n_examples, allow_bank_mismatch=allow_bank_mismatch,
                   cvae=load_bundle(cvae) if cvae is not None else None)

    # ------------------------------------------------------------------ encode / decode

    @torch.no_grad()  # not inference_mode: z is handed out, and callers may change it in place
    def encode_array(self, face: np.ndarray, labels: np.ndarray | None = None) -> torch.Tensor:
        """uint8 (3, S, S) -> z (D,) = mu; with a CVAE, [mu, mu_c, y] with y = `labels` ((40,) in
        {0, 1}) or, without them, the labels the CVAE's q(y | x) infers."""
        x = to_float(face[None])
        mu, _ = self.model.encode(x)  # (1, 3, S, S) -> (1, D)
        if self.cvae is None:
            return mu[0].clone()
        y = (self.cvae.condition_of(torch.as_tensor(labels[None])) if labels is not None
             else self.cvae.infer_labels(x))  # (1, L)
        mu_c, _ = self.cvae.encode(x, y)
        return torch.cat([mu[0], mu_c[0], y[0]])

    @torch.inference_mode()  # the fast path of every slider move
    def decode(self, z: torch.Tensor, conditional: bool = False) -> np.ndarray:
        """z (D,) -> uint8 (S, S, 3) by the VAE (or the CVAE). Always a batch of one, so equal z give
        identical pixels."""
        z = self.check_z(z)
        if not conditional:
            return to_image(self.model.decode(z[None, : self._vae_dim])[0])  # (1, D) -> (1, 3, S, S)
        Dc = self.cvae.config.latent_dim
        mu_c, y = z[self._vae_dim: self._vae_dim + Dc], z[self._vae_dim + Dc:]
        return to_image(self.cvae.decode(mu_c[None], y[None])[0])

    @property
    def _vae_dim(self) -> int:
        return self.vae_dim if self.cvae is not None else self.dim

    def encode(self, photo: str | Path | bytes, align: bool = True, face: int | None = None) -> Encoded:
        """Any photo file or its bytes -> Encoded.

        align (the default): the face is detected and aligned to CelebA's geometry; `face` picks one
        of several (0 = the largest). align=False: the photo's centre crop, as it is. ImageError for
        a bad file and AlignError for no usable face (both ValueErrors naming the file).
        """
        if not align:
            # One decode serves the face and the preview; ImageError names what is wrong with the file.
            image = open_photo(photo, self.size, keep_side=PREVIEW_SIDE)
            crop = face_array(image, self.size)  # (3, S, S) uint8
            z = self.encode_array(crop)
            return Encoded(crop_preview(image), crop.transpose(1, 2, 0).copy(), z, self.decode(z),
                           message="centre crop of the photo, not aligned")
        picture = np.asarray(load_image(photo))  # (H, W, 3) uint8, upright
        try:
            alignment = align_photo(picture, face)
        except AlignError as e:
            what = "uploaded image" if isinstance(photo, (bytes, bytearray)) else str(photo)
            raise AlignError(f"{what}: {e}") from None
        crop = face_array(Image.fromarray(alignment.image), self.size)  # CelebA's crop of the aligned face
        z = self.encode_array(crop)
        recon = self.decode(z)
        n = len(alignment.faces)
        message = (f"{n} faces found (0 = the largest); editing face {alignment.index}" if n > 1
                   else "1 face found") + f", {alignment.face.size:.0f} px across, aligned to CelebA's frame"
        return Encoded(alignment_preview(picture, alignment), crop.transpose(1, 2, 0).copy(), z, recon,
                       Placement(picture, alignment, recon), message)

    def paste(self, placement: Placement, edited: np.ndarray, mode: str = PASTE_MODE) -> np.ndarray:
        """An edited face (S, S, 3) uint8 put back into the photo it came from -> (H, W, 3) uint8,
        the photo's own size (`faceedit.align.paste_back`)."""
        if placement is None:
            raise ValueError("no photo to paste into: the face was not aligned from a photo")
        return paste_back(placement.photo, placement.alignment.matrix, edited, placement.reconstruction, mode)

    def encode_example(self, index: int) -> Encoded:
        """The index-th example face (a val row of the training cache), encoded."""
        if not 0 <= index < len(self.example_rows):
            raise ValueError(f"example {index}: expected 0..{len(self.example_rows) - 1}"
                             if self.example_rows else "no example faces: the training cache is not here")
        face = np.array(self.cache.images[self.example_rows[index]])  # (3, S, S) uint8, a copy
        z = self.encode_array(face, self.cache.labels[self.example_rows[index]])
        shown = face.transpose(1, 2, 0).copy()
        return Encoded(upscale(shown, max(1, PREVIEW_SIDE // self.size)), shown, z, self.decode(z))

    def examples(self) -> list[tuple[np.ndarray, str]]:
        """(uint8 (S, S, 3), caption) for each example face, in example-index order."""
        return [(np.asarray(self.cache.images[r]).transpose(1, 2, 0).copy(), self.cache.names[r])
                for r in self.example_rows]

    # ------------------------------------------------------------------ edits

    def edit_z(self, z: torch.Tensor, strengths: Mapping[str, float], method: str) -> torch.Tensor:
        """z (D,) + sum alpha_k v_k (only non-zero strengths are applied) -> (D,)."""
        z = self.check_z(z)
        chosen = check_strengths(strengths)
        if method not in self.methods:
            raise ValueError(f"method {method!r}: expected one this bank offers: {', '.join(self.methods)}")
        if not chosen:
            return z
        if method == "conditional":  # the labels y, the tail of z, change; mu_c stays
            from faceedit.cvae import edit_labels

            L = len(self.cvae.config.condition)
            y = edit_labels(z[None, -L:], chosen, self.cvae.config.condition)[0]
            return torch.cat([z[:-L], y])
        D = self._vae_dim
        return torch.cat([edit_latent(z[None, :D], chosen, self.bank, method)[0], z[D:]])  # (1, D) -> (D,)

    def edit(self, z: torch.Tensor, strengths: Mapping[str, float], method: str = "balanced") -> np.ndarray:
        """The face of z edited by `strengths` ({attribute: alpha}, alpha in -3..3) -> uint8 (S, S, 3)."""
        return self.decode(self.edit_z(z, strengths, method), conditional=method == "conditional")

    def compare(self, z: torch.Tensor, strengths: Mapping[str, float],
                methods: Sequence[str] = COMPARE_METHODS) -> dict[str, np.ndarray]:
        """The same edit with each method (White 2016 Figure 7: naive vs balanced) -> {method: image}."""
        return {m: self.edit(z, strengths, m) for m in methods}

    def sample(self, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        """A face from the bundle's sampling prior (the Gaussian fitted to the training faces' codes;
        N(0, I) for a bundle without one), drawn with `seed` -> (z (D,), uint8 (S, S, 3))."""
        g = torch.Generator().manual_seed(int(seed))
        z = self.model.sample_latents(1, g)[0]
        if self.cvae is not None:  # followed by the CVAE's code of the VAE's sampled face
            with torch.no_grad():
                face = (self.model.decode(z[None])[0] * 255).round().byte().numpy()
            z = torch.cat([z, self.encode_array(face)[self.vae_dim:]])
        return z, self.decode(z)

    @torch.inference_mode()
    def interpolate(self, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 8) -> np.ndarray:
        """Faces along slerp(z_a, z_b, t) for `steps` t in [0, 1] -> uint8 (S, steps*S, 3).

        Spherical, not linear: White 2016 argues slerp stays on the prior's shell where the
        decoder was trained, while a straight line passes through the improbable centre.
        """
        if not 2 <= int(steps) <= MAX_STEPS:
            raise ValueError(f"steps={steps}: expected 2..{MAX_STEPS}")
        D = self._vae_dim
        a, b = self.check_z(z_a)[:D], self.check_z(z_b)[:D]
        ts = torch.linspace(0, 1, int(steps))
        zs = torch.stack([slerp(a, b, float(t)) for t in ts])  # (steps, D)
        x = self.model.decode(zs)  # (steps, D) -> (steps, 3, S, S)
        return to_image(torch.cat(list(x), dim=2))  # -> (3, S, steps*S) -> (S, steps*S, 3)

    # ------------------------------------------------------------------ checks and description

    def check_z(self, z: Any) -> torch.Tensor:
        """A latent from a caller (tensor, array or list) -> float32 (D,); ValueError otherwise."""
        if z is None:
            raise ValueError("no face encoded yet: upload a photo, pick an example or draw a random face")
        try:
            t = torch.as_tensor(np.asarray(z, dtype=np.float32) if not isinstance(z, torch.Tensor) else z)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"latent of type {type(z).__name__}: expected a list of {self.dim} finite "
                             "numbers") from None
        if t.dim() != 1 or t.shape[0] != self.dim or not torch.isfinite(t).all():
            raise ValueError(f"latent of shape {tuple(t.shape)}: expected {self.dim} finite numbers")
        return t.float()

    def describe(self) -> str:
        """Markdown: which bundle and bank are loaded, what they were trained on, their metrics."""
        return describe(self.bundle, self.bank, self.cache, self.methods, len(self.example_rows))

    def _has_method(self, method: str) -> bool:
        try:
            self.bank.vector(ATTRIBUTES[0], method)
        except (KeyError, ValueError):
            return False
        return True

    def _check_bank(self) -> None:
        v = self.bank.vector(FEATURED[0], self.methods[0])
        if tuple(v.shape) != (self._vae_dim,):
            raise ValueError(f"bank {bank_path_of(self.bank)} has vectors of shape {tuple(v.shape)}, "
                             f"but the bundle {self.bundle.path} has latent size {self._vae_dim}: "
                             "build the bank from this bundle (`faceedit vectors`)")

    def _example_rows(self, n: int) -> list[int]:
        if self.cache is None or self.cache.size != self.size:
            return []
        rows = self.cache.indices("val")
        if len(rows) == 0:
            rows = self.cache.indices("test")
        return [int(r) for r in rows[:n]]


def check_strengths(strengths: Mapping[str, float]) -> dict[str, float]:
    """{attribute: alpha} -> the non-zero entries as floats; ValueError for an unknown name or an
    alpha outside -3..3 or not finite."""
    chosen: dict[str, float] = {}
    if not isinstance(strengths or {}, Mapping):
        raise ValueError(f"strengths of type {type(strengths).__name__}: expected {{attribute: number}}, "
                         'e.g. {"Smiling": 1.5}')
    for name, value in dict(strengths or {}).items():
        attribute_index(str(name))
        try:
            alpha = float(value) if not isinstance(value, bool) else float("nan")
        except (TypeError, ValueError, OverflowError):
            alpha = float("nan")
        if not np.isfinite(alpha) or abs(alpha) > STRENGTH_LIMIT:
            raise ValueError(f"strength of {name} = {value}: expected a number in "
                             f"-{STRENGTH_LIMIT:g}..{STRENGTH_LIMIT:g}")
        if alpha != 0.0:
            chosen[name] = alpha
    return chosen


def default_threads() -> int:
    """Intra-op threads for one decode: a 64 px decoder gains little past 4, and the server runs a
    few requests at once, so use at most half the cores (at least 1)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def open_cache(path: str | Path) -> Cache | None:
    try:
        return Cache.open(path)
    except CacheError:
        return None


def training_cache(bundle: Bundle) -> Cache | None:
    """The cache the bundle was trained on, if it is on this machine; None otherwise.

    The bundle records the cache's content hash (config.json "cache"); the cache is looked for at a
    path the bundle names (a "cache_path" key), else among the folders beside the bundle and one
    level up (where `faceedit run` puts caches), and accepted only when its hash matches.
    """
    recorded, want = bundle.meta.get("cache"), _recorded_hash(bundle.meta)
    if not want:
        return None
    named = bundle.meta.get("cache_path") or (recorded.get("path") if isinstance(recorded, Mapping) else None)
    here = Path(bundle.path).resolve()
    candidates = [Path(named)] if named else []
    for folder in (here.parent, here.parent.parent):
        try:
            candidates += sorted(p for p in folder.iterdir() if p.is_dir() and p != here)
        except OSError:  # an unreadable folder: look elsewhere
            continue
    for path in candidates:
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("content_hash") == want:
            return open_cache(path)
    return None


def _recorded_hash(meta: Mapping[str, Any]) -> str | None:
    """The training cache's content hash a bundle records ("cache": hash, or {"hash": ...})."""
    recorded = meta.get("cache")
    return recorded.get("hash") if isinstance(recorded, Mapping) else recorded


def bank_path_of(bank: AttributeBank) -> str:
    return str(getattr(bank, "path", "(in memory)"))


def describe(bundle: Bundle, bank: AttributeBank, cache: Cache | None, methods: Sequence[str],
             n_examples: int = 0) -> str:
    """Markdown: the bundle (model, training data, training settings, metrics) and the bank."""
    meta, cfg = dict(bundle.meta), bundle.model.config
    beta = f", beta {cfg.beta:g}" if hasattr(cfg, "beta") else ""
    lines = [f"**Model** `{bundle.path}`: {meta.get('kind', 'vae')}, {cfg.image_size} px, "
             f"latent {cfg.latent_dim}{beta}"]
    recorded = meta.get("cache")
    if cache is not None:
        m = cache.manifest
        splits = {name: len(cache.indices(name)) for name in ("train", "val", "test")}
        lines.append(f"- training data: `{cache.root}` from {m.get('source', '?')}: {len(cache)} faces "
                     f"({', '.join(f'{k} {v}' for k, v in splits.items())}), {cache.size} px")
    elif recorded:
        lines.append(f"- training data: cache {str(recorded)[:16]}... (not on this machine)")
    lines += [f"- {k}: {_fmt(v)}" for k, v in meta.items()
              if isinstance(v, (str, int, float)) and k not in ("format", "kind", "cache")]
    lines += _section("training", meta.get("training"))
    lines += _section("metrics", meta.get("metrics"))
    info = getattr(bank, "meta", None) or {}
    lines.append(f"\n**Vectors** `{bank_path_of(bank)}`: methods {', '.join(methods)}")
    source = info.get("source") or {}
    if source.get("faces"):
        lines.append("- computed on " + ", ".join(f"{k} {v} faces" for k, v in source["faces"].items()))
    auc = _mean_auc(info.get("per_attribute") or {}, methods)
    if auc:
        lines.append("- held-out ROC AUC of z.v, mean over attributes: "
                     + ", ".join(f"{m} {v:.3f}" for m, v in auc.items()))
    if info.get("capped_vectors"):
        lines.append(f"- replication cap reached by: {', '.join(info['capped_vectors'])}")
    lines += _section("settings", info.get("settings"))
    if cache is not None and recorded and cache.hash != _recorded_hash(meta):
        lines.append("- (not the cache the bundle was trained on: its val faces may be training faces)")
    lines.append("\n**Example faces**: " + (
        f"the first {n_examples} faces of the val split of `{cache.root}`"
        if cache is not None and n_examples else "none (the bundle's training cache is not on this machine)"))
    return "\n".join(lines)


def _mean_auc(per_attribute: Mapping[str, Any], methods: Sequence[str]) -> dict[str, float]:
    out = {}
    for m in methods:
        values = [a["auc"][m] for a in per_attribute.values()
                  if isinstance(a.get("auc"), Mapping) and a["auc"].get(m) is not None]
        if values:
            out[m] = float(np.mean(values))
    return out


def _section(title: str, values: Any) -> list[str]:
    if not values:
        return []
    if not isinstance(values, Mapping):
        return [f"- {title}: {values}"]
    items = [f"{k} = {_fmt(v)}" for k, v in values.items() if not isinstance(v, (dict, list))]
    return [f"- {title}: " + "; ".join(items)] if items else []


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if not isinstance(v, str) else v

