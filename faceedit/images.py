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
from PIL import Image, UnidentifiedImageError
from PIL import (  # noqa: F401  registers the formats FORMATS names
    BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin,
)

# CelebA's aligned images are 178x218; the common face crop is their centre 148x148
# (as in e.g. the DCGAN/VAE CelebA pipelines). Other sizes are cropped in proportion.
CELEBA_SIZE = (178, 218)
CELEBA_CROP = 148
MAX_PIXELS = 50_000_000  # larger images are refused before decoding (a 50 MP photo is already huge)
MAX_DECODE_BYTES = 256 * 2**20  # memory one photo may take to decode and convert, checked before decoding
# Bytes per pixel of the full-size image while it is decoded and converted (pixels are shrunk to
# what is needed before any further conversion; palette and 1-bit images are converted whole first).
PEAK_BYTES = {"1": 2, "L": 1, "P": 5, "LA": 2, "La": 2, "PA": 5, "I;16": 2, "I;16B": 2, "I;16L": 2,
              "I;16N": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4,
              "CMYK": 4, "I": 4, "F": 4}
# EXIF orientation -> the transposition that makes the image upright (EXIF 2.3, tag 0x0112).
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
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
    non-image, a truncated file, an image over `max_pixels` or MAX_DECODE_BYTES (checked before
    decoding) or an animated / multi-frame image.
    """
    return face_array(open_photo(src, size, max_pixels=max_pixels), size)


def open_photo(src: str | Path | bytes | Image.Image, size: int, keep_side: int = 0,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A user photo decoded once, checked, upright and in RGB, no larger than its uses need: its
    CelebA crop at least 2*size pixels wide and its longest side at least `keep_side` (a preview),
    where the photo is that large. Large images are shrunk (an exact area average) before any
    colour conversion, so a 16-bit or palette photo costs about its decoded size in memory.
    ImageError as load_photo."""
    if isinstance(src, Image.Image):
        return to_rgb(src, "image")
    what, data = _read_source(src)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            _check_header(img, what, max_pixels)
            _draft(img, size, keep_side)
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(_open_message(what, e)) from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL says "image file is truncated", "broken data stream" etc.: the file is damaged.
        raise ImageError(f"{what}: damaged or truncated image ({e})") from None
    turn = UPRIGHT.get(img.getexif().get(0x0112, 1))
    img = _shrink(img, size, keep_side, turned=turn in (Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE,
                                                         Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270))
    if turn is not None:
        img = img.transpose(turn)
    return to_rgb(img, what)


def load_image(src: str | Path | bytes | Image.Image, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A user photo decoded whole, at its own resolution (checked, upright, RGB, as `open_photo`):
    what face alignment and pasting an edit back into the photo need."""
    return open_photo(src, 1, keep_side=1 << 62, max_pixels=max_pixels)  # nothing shrinks


def _shrink(img: Image.Image, size: int, keep_side: int, turned: bool) -> Image.Image:
    """Reduce a large image by an integer factor k (BOX: the mean of k x k pixels) while its crop
    stays >= 2*size and its longest side >= keep_side; palette and 1-bit images are converted
    first (they cannot be averaged)."""
    width, height = img.size[::-1] if turned else img.size
    crop = crop_box(width, height)
    k = (crop[2] - crop[0]) / (2 * size)
    if keep_side:
        k = min(k, max(width, height) / keep_side)
    if int(k) < 2:
        return img
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    W, H = img.size
    return img.resize((max(1, round(W / int(k))), max(1, round(H / int(k)))), Image.Resampling.BOX)


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
    """Refuse bombs, memory hogs and animations from the header alone, before any pixel is decoded."""
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"{what}: {width}x{height} image ({width * height / 1e6:.0f} MP) is too large to decode"
            f" safely: over the {max_pixels / 1e6:.0f} MP limit (a decompression bomb, or shrink it first)"
        )
    need = width * height * PEAK_BYTES.get(img.mode, 8)
    if need > MAX_DECODE_BYTES:
        raise ImageError(
            f"{what}: {width}x{height} {img.mode} image needs about {need / 2**20:.0f} MB to decode, over "
            f"the {MAX_DECODE_BYTES / 2**20:.0f} MB a photo may use: shrink it or save it as 8-bit RGB")
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":
        raise ImageError(f"{what}: animated or multi-frame {img.format} ({frames} frames), expected a still image")


def _draft(img: Image.Image, size: int, keep_side: int = 0) -> None:
    """Let libjpeg decode a large JPEG at 1/2..1/8 scale, keeping the crop at least 2x `size` and
    the longest side at least keep_side."""
    if img.format not in ("JPEG", "MPO"):
        return
    box = crop_box(*img.size)
    scale = max(2 * size / (box[2] - box[0]), keep_side / max(img.size))
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




def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit integer or float greyscale -> uint8, keeping the full range: round(v * 255 /
    top) in integer arithmetic for integers (no float64 copy; 65535 -> 255, 257 -> 1)."""
    if mode == "F":
        values = values.astype(np.float32, copy=False)
        top = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(values * np.float32(255.0 / top)), 0, 255).astype(np.uint8)
    top = 65535 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255
    out = np.empty(values.shape, dtype=np.uint8)
    rows = max(1, (1 << 20) // max(1, values.shape[-1]))  # about a megapixel at a time: bounded temporaries
    for i in range(0, values.shape[0], rows):
        wide = np.clip(values[i:i + rows], 0, top).astype(np.uint32)
        out[i:i + rows] = (wide * 255 + top // 2) // top
    return out


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
