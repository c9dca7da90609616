"""Turning an image into the model's input: the CelebA face crop, resized to S x S, as uint8 (3, S, S).

`face_array` is the crop every stage shares (prepare, the editor, the CLI), so a user's photo is
framed exactly like the training faces. `load_photo` decodes any user photo safely: it checks the
size before decoding (decompression bombs), refuses animations, composites transparency on white,
and maps 16-bit and greyscale images to 8-bit RGB.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL import (  # noqa: F401  registers the formats FORMATS names
    BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin,
)

# CelebA's aligned images are 178x218; the common face crop is their centre 148x148
# (as in e.g. the DCGAN/VAE CelebA pipelines). Other sizes are cropped in proportion.
CELEBA_SIZE = (178, 218)
CELEBA_CROP = 148
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (a 50 MP photo is already huge)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # JPEG includes MPO (camera JPEGs with a preview)
WHITE = (255, 255, 255)


class ImageError(ValueError):
    """A file that is not a usable still image; the message says which and why."""


def crop_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The CelebA crop of a width x height image: a centred square, 148/178 of the width for 178x218.

    The side is 148 * min(W / 178, H / 218), so the crop scales with the image and stays inside it.
    """
    side = CELEBA_CROP * min(width / CELEBA_SIZE[0], height / CELEBA_SIZE[1])
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def face_array(img: Image.Image, size: int) -> np.ndarray:
    """PIL image -> uint8 (3, size, size): the CelebA centre crop, then resize.

    Downscaling uses PIL's BOX filter (an exact area average: no aliasing, no ringing); upscaling
    uses BICUBIC. A 178x218 image is cropped to (15, 35, 163, 183).
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    if img.mode != "RGB":
        img = img.convert("RGB")
    box = crop_box(*img.size)
    resample = Image.Resampling.BOX if box[2] - box[0] >= size else Image.Resampling.BICUBIC
    face = img.resize((size, size), resample, box=box)  # (H, W) -> (size, size)
    return np.asarray(face, dtype=np.uint8).transpose(2, 0, 1).copy()  # (S, S, 3) -> (3, S, S)


def load_photo(src: str | Path | bytes | Image.Image, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Any user photo (path, bytes or PIL image) -> uint8 (3, size, size), framed like CelebA.

    Accepts JPEG, PNG, WebP, BMP and still GIF; RGB, RGBA (composited on white), greyscale, palette,
    CMYK and 16-bit images; EXIF rotation is applied. Raises ImageError for an empty file, a
    non-image, a truncated file, an image over `max_pixels` (checked before decoding) or an
    animated / multi-frame image.
    """
    if isinstance(src, Image.Image):
        return face_array(to_rgb(src, "image"), size)
    return face_array(load_image(src, max_pixels, draft_size=size), size)


def load_image(src: str | Path | bytes, max_pixels: int = MAX_PIXELS, draft_size: int = 0) -> Image.Image:
    """Any user photo (path or bytes) -> the whole RGB image, upright (EXIF rotation applied), with
    the checks and colour handling of `load_photo`. draft_size > 0: a large JPEG may be decoded at
    reduced scale, keeping its centre crop at least 2x draft_size (only for the centre crop)."""
    what, data = _read_source(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_header(img, what, max_pixels)
            if draft_size:
                _draft(img, draft_size)
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(_open_message(what, e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL says "image file is truncated", "broken data stream" etc.: the file is damaged.
        raise ImageError(f"{what}: damaged or truncated image ({e})") from None
    return to_rgb(ImageOps.exif_transpose(img), what)


def _read_source(src: str | Path | bytes) -> tuple[str, bytes]:
    """(a name for messages, the file's bytes); ImageError for a missing or empty file."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        what, data = "uploaded image", bytes(src)
    else:
        what = str(src)
        try:
            data = Path(src).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{what}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{what}: is a folder, expected an image file") from None
    if not data:
        raise ImageError(f"{what}: empty file (0 bytes), expected a JPEG, PNG or WebP image")
    return what, data


def _open_message(what: str, e: Exception) -> str:
    if isinstance(e, UnidentifiedImageError):
        return f"{what}: not an image, or not one of {', '.join(FORMATS)}"
    return f"{what}: image too large to decode safely ({e})"


def _check_header(img: Image.Image, what: str, max_pixels: int) -> None:
    """Refuse bombs and animations from the header alone, before any pixel is decoded."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"{what}: {width}x{height} image ({width * height / 1e6:.0f} MP) is too large to decode"
            f" safely: over the {max_pixels / 1e6:.0f} MP limit (a decompression bomb, or shrink it first)"
        )
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        raise ImageError(f"{what}: animated or multi-frame {img.format} ({frames} frames), expected a still image")


def _draft(img: Image.Image, size: int) -> None:
    """Let libjpeg decode a large JPEG at 1/2..1/8 scale, keeping the crop at least 2x `size`."""
    if img.format not in ("JPEG", "MPO"):
        return
    box = crop_box(*img.size)
    scale = 2 * size / (box[2] - box[0])
    if scale < 0.5:
        img.draft("RGB", (math.ceil(img.size[0] * scale), math.ceil(img.size[1] * scale)))


def to_rgb(img: Image.Image, what: str = "image") -> Image.Image:
    """Any PIL mode -> RGB: alpha composited on white, 16-bit and float scaled to 8 bits.

    `what` names the image in an ImageError (an unsupported colour mode)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img), img.mode), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise ImageError(f"{what}: unsupported colour mode {img.mode} ({e})") from None


_to_rgb = to_rgb  # the name faceedit/editor.py imports


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit integer or float greyscale -> uint8, keeping the full range."""
    values = values.astype(np.float64)
    if mode == "F":
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
    else:
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class DecodedChunk:
    """CelebA files decoded by `decode_chunk` (lives here, not in prepare.py, so that pool workers
    import only numpy and PIL, not torch)."""

    start: int
    pixels: np.ndarray  # (k, 3, S, S) uint8; rows of failed files are zero
    digests: list[str]  # sha256 of each file's bytes ("" where it failed)
    errors: list[tuple[int, str]]  # (index within the chunk, message)


def decode_chunk(task: tuple[int, list[str], int]) -> DecodedChunk:
    """(start, paths, size) -> the faces of `paths` as (k, 3, size, size) uint8, with file hashes.

    Dataset files are trusted more than user photos (no size cap), but a damaged one is reported.
    """
    start, paths, size = task
    pixels = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    digests, errors = [], []
    for j, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                pixels[j] = face_array(img, size)
            digests.append(hashlib.sha256(data).hexdigest())
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            digests.append("")
            errors.append((j, f"{path}: unreadable or truncated image ({e})"))
    return DecodedChunk(start, pixels, digests, errors)
