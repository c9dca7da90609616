"""Edits in latent space: attribute vectors added to a code, interpolation, analogy, and the strip.

`edit` is what the editor and the audit call: z' = z + sum_k alpha_k v_k, with alpha_k in units of
the vector's own length (alpha = 1 moves a face by one full attribute vector; a negative alpha
removes the attribute). `slerp` follows White 2016 ("Sampling Generative Networks", Sec. 2.1): in a
high-dimensional Gaussian prior almost all mass lies on a thin shell, and a straight line between
two codes dips inside it, while the great-circle path keeps the norm.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from faceedit.attributes import attribute_index

if TYPE_CHECKING:
    from faceedit.bank import AttributeBank

STRIP_STRENGTHS: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)


def edit(z: torch.Tensor, strengths: Mapping[str, float], bank: "AttributeBank",
         method: str = "balanced") -> torch.Tensor:
    """z + sum_k strengths[k] * bank.vector(k, method). z: (D,) or (B, D) -> same shape.

    Strengths of 0 are skipped, so an edit of all zeros returns z unchanged (a copy, bit for bit).
    Unknown attribute or method names raise ValueError listing the valid ones.
    """
    if z.dim() not in (1, 2) or z.shape[-1] != bank.dim:
        raise ValueError(f"edit: codes must be (D,) or (B, D) with D = {bank.dim}, got {tuple(z.shape)}")
    bank.matrix(method)  # an unknown method fails even with no strengths
    out = z.clone()
    for attr, alpha in strengths.items():
        v = bank.vector(attr, method)  # checks both names
        alpha = float(alpha)
        if not math.isfinite(alpha):
            raise ValueError(f"edit: strength of {attr} is {alpha}; expected a finite number")
        if alpha != 0.0:
            out = out + alpha * v.to(dtype=z.dtype, device=z.device)
    return out


def parse_strengths(items: Sequence[str]) -> dict[str, float]:
    """["Smiling=+1.5", "Eyeglasses=-1"] -> {"Smiling": 1.5, "Eyeglasses": -1.0}, checked."""
    out: dict[str, float] = {}
    for item in items:
        attr, eq, value = item.partition("=")
        attr = attr.strip()
        if not eq or not attr:
            raise ValueError(f"{item!r}: expected ATTRIBUTE=STRENGTH, e.g. Smiling=+1.5")
        try:
            attribute_index(attr)
        except ValueError as e:
            raise ValueError(f"{item!r}: {e}") from None
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: strength {value!r} is not a number (e.g. Smiling=+1.5)") from None
        if not math.isfinite(strength):
            raise ValueError(f"{item!r}: strength must be finite")
        if attr in out:
            raise ValueError(f"{item!r}: {attr} is set twice")
        out[attr] = strength
    return out


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """(1 - t) a + t b. a, b: (..., D); t a float or a tensor broadcasting against them."""
    return a + (b - a) * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float | torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for latent spaces). a, b: (..., D).

    sin((1-t) w) / sin w * a + sin(t w) / sin w * b, with w the angle between a and b. Its endpoints
    are a and b, and between two codes of equal norm every point has that norm. Where a and b are
    (nearly) parallel, sin w -> 0 and the great circle is the straight line: lerp is used there.
    Opposite codes have no unique great circle: a ValueError.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp: a {tuple(a.shape)} and b {tuple(b.shape)} differ in shape")
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True))
    cos = cos.nan_to_num(1.0).clamp(-1.0, 1.0)  # a zero code: treat as parallel (lerp)
    if (cos < -1 + eps).any():
        raise ValueError("slerp: the codes point in opposite directions; no unique great circle (use lerp)")
    t64 = torch.as_tensor(t, dtype=torch.float64)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    near = so < eps
    safe = torch.where(near, torch.ones_like(so), so)
    out = (torch.sin((1 - t64) * omega) / safe) * a64 + (torch.sin(t64 * omega) / safe) * b64
    out = torch.where(near, lerp(a64, b64, t64), out)
    return out.to(a.dtype)


def analogy(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """a - b + c: the code that is to c as a is to b (White 2016, Sec. 2.3). Shapes (..., D)."""
    return a - b + c


# ---------------------------------------------------------------------------- pictures

def to_pil(x: torch.Tensor | np.ndarray) -> Image.Image:
    """(3, S, S) float in [0, 1] or uint8 -> RGB image."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a.transpose(1, 2, 0)), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    return image_bytes(img, "PNG")


def image_format(path: str | Path) -> str:
    """The image format a file name asks for (.png, .jpg, .webp, ...; PNG where it names none)."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix) if suffix else "PNG"
    if fmt not in ("PNG", "JPEG", "WEBP", "TIFF", "BMP"):
        raise ValueError(f"{path}: cannot write a {suffix!r} image; name it .png, .jpg or .webp")
    return fmt


def image_bytes(img: Image.Image, fmt: str) -> bytes:
    """img encoded as `fmt` (see image_format); JPEG at quality 95."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_grid(rows: Sequence[Sequence[torch.Tensor | np.ndarray]], row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), scale: int = 1, pad: int = 2, title: str = "") -> Image.Image:
    """A white sheet of images (each (3, S, S)), rows x columns, with optional labels on the left and
    top and a title above.

    Faces are enlarged `scale` times with nearest-neighbour sampling, so every pixel stays honest.
    """
    tiles = [[to_pil(x) for x in row] for row in rows]
    S = tiles[0][0].width * scale
    ncol = max(len(r) for r in tiles)
    left = 7 * max((len(s) for s in row_labels), default=0) + (6 if row_labels else 0)
    top = (14 if col_labels else 0) + (14 if title else 0)
    sheet = Image.new("RGB", (left + ncol * (S + pad) + pad, top + len(tiles) * (S + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((3, 2), title, fill="black", anchor="lt")
    for j, text in enumerate(col_labels):
        draw.text((left + pad + j * (S + pad) + S // 2, top - 2), text, fill="black", anchor="ms")
    for i, row in enumerate(tiles):
        y = top + pad + i * (S + pad)
        if i < len(row_labels):
            draw.text((3, y + S // 2), row_labels[i], fill="black", anchor="lm")
        for j, tile in enumerate(row):
            sheet.paste(tile.resize((S, S), Image.NEAREST), (left + pad + j * (S + pad), y))
    return sheet


@torch.no_grad()
def strip(model: torch.nn.Module, z: torch.Tensor, bank: "AttributeBank", attr: str,
          methods: Sequence[str] = ("naive", "balanced"),
          strengths: Sequence[float] = STRIP_STRENGTHS, scale: int = 2,
          originals: torch.Tensor | None = None) -> Image.Image:
    """White's Figure 7: faces edited along `attr` at each strength, one row per face and method.

    z: (D,) or (F, D) codes (e.g. encoder means of real faces); model: anything with decode(z).
    The columns are the strengths; the 0 column is the plain reconstruction in every row.
    originals: the photos (F, 3, S, S) the codes came from, shown in a first column when given.
    """
    for method in methods:
        bank.vector(attr, method)  # unknown names: ValueError listing the valid ones
    if not strengths or not methods:
        raise ValueError(f"strip: needs at least one strength and one method, got {list(strengths)}, {list(methods)}")
    zs = z.reshape(-1, z.shape[-1])  # (F, D)
    rows, labels = [], []
    for f in range(len(zs)):
        for method in methods:
            codes = torch.stack([edit(zs[f], {attr: s}, bank, method) for s in strengths])  # (T, D)
            first = [] if originals is None else [originals.reshape(len(zs), *originals.shape[-3:])[f]]
            rows.append(first + list(model.decode(codes)))  # (1 +) T images (3, S, S)
            labels.append(method if len(zs) == 1 else f"{f}: {method}")
    cols = ([] if originals is None else ["original"]) + [f"{s:+g}" for s in strengths]
    return image_grid(rows, labels, cols, scale=scale, title=f"{attr}: strength in units of the vector")
