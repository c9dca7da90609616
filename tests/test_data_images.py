"""faceedit/images.py: the CelebA crop, and load_photo on good and hostile user photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from faceedit.images import ImageError, crop_box, face_array, load_photo


def _smooth_image(w: int, h: int) -> Image.Image:
    """A smooth RGB test image (gradients), so resampling at different scales agrees closely."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / w * 6) * np.cos(y / h * 5)], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (what a decompression bomb looks like to open())."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_crop_box_is_celeba_centre_148_and_scales():
    assert crop_box(178, 218) == (15.0, 35.0, 163.0, 183.0)
    assert crop_box(356, 436) == (30.0, 70.0, 326.0, 366.0)
    left, top, right, bottom = crop_box(300, 200)  # wide photo: limited by the height
    assert right - left == pytest.approx(148 * 200 / 218) and (left + right) / 2 == 150


def test_face_array_is_the_celeba_crop_resized():
    img = _smooth_image(178, 218)
    got = face_array(img, 64)
    assert got.shape == (3, 64, 64) and got.dtype == np.uint8
    expected = np.asarray(img.crop((15, 35, 163, 183)).resize((64, 64), Image.Resampling.BOX))
    np.testing.assert_array_equal(got, expected.transpose(2, 0, 1))


def test_face_array_crops_in_proportion_for_other_sizes():
    small, big = _smooth_image(178, 218), _smooth_image(356, 436)
    diff = np.abs(face_array(small, 32).astype(int) - face_array(big, 32).astype(int))
    assert diff.mean() < 2.0  # the same part of the face at any resolution


def test_face_array_upscales_and_converts_mode():
    grey = _smooth_image(178, 218).convert("L")
    got = face_array(grey, 256)
    assert got.shape == (3, 256, 256)
    np.testing.assert_array_equal(got[0], got[1])


def test_load_photo_real_faces(real_faces):
    for path in real_faces:
        x = load_photo(path, 64)
        assert x.shape == (3, 64, 64) and x.dtype == np.uint8
        assert x.std() > 20, f"{path.name}: a real photo has contrast"
        assert np.array_equal(load_photo(path.read_bytes(), 64), x), "bytes and path agree"
    celeba_sized = [p for p in real_faces if Image.open(p).size == (178, 218)]
    for path in celeba_sized:  # a CelebA-sized photo is framed exactly like the training faces
        np.testing.assert_array_equal(load_photo(path, 64), face_array(Image.open(path), 64))


def test_load_photo_large_jpeg_uses_draft_but_keeps_the_face():
    img = _smooth_image(1780, 2180)
    fast = load_photo(_encode(img, "JPEG", quality=95), 64)
    exact = face_array(img, 64)
    assert np.abs(fast.astype(int) - exact.astype(int)).mean() < 3.0


def test_rgba_is_composited_on_white():
    rgba = np.zeros((218, 178, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent everywhere ...
    rgba[100:120, 80:100, 3] = 255  # ... except an opaque red square in the crop
    x = load_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), 148)
    assert (x[:, :40, :40] == 255).all(), "transparent pixels become white, not black"
    centre = x[:, 70:80, 70:80]
    assert (centre[0] == 255).all() and (centre[1:] == 0).all()


def test_half_transparent_pixels_blend_with_white():
    rgba = np.zeros((218, 178, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 128
    x = load_photo(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), 16)
    assert abs(int(x[0].mean()) - 127) <= 2 and x[2].min() == 255


def test_greyscale_and_palette_become_rgb():
    grey = _smooth_image(178, 218).convert("L")
    x = load_photo(_encode(grey, "PNG"), 32)
    np.testing.assert_array_equal(x[0], x[2])
    pal = _smooth_image(178, 218).convert("P")
    assert load_photo(_encode(pal, "PNG"), 32).shape == (3, 32, 32)


def test_16_bit_greyscale_keeps_its_range():
    values = np.full((218, 178), 32768, np.uint16)  # mid-grey in 16 bits
    img = Image.fromarray(values)
    data = _encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # really a 16-bit PNG
    x = load_photo(data, 32)
    assert np.all(x == 128), "16-bit mid-grey is 8-bit 128, not clipped to 255"


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow has no WebP codec")
def test_webp_loads():
    img = _smooth_image(178, 218)
    x = load_photo(_encode(img, "WEBP", quality=95), 64)
    assert np.abs(x.astype(int) - face_array(img, 64).astype(int)).mean() < 4


def test_exif_rotation_is_applied():
    img = _smooth_image(218, 178)  # stored sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    x = load_photo(_encode(img, "JPEG", quality=95, exif=exif), 32)
    upright = face_array(img.transpose(Image.Transpose.ROTATE_270), 32)
    assert np.abs(x.astype(int) - upright.astype(int)).mean() < 4


def test_pil_image_input():
    img = _smooth_image(178, 218)
    np.testing.assert_array_equal(load_photo(img, 64), face_array(img, 64))


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageError, match="too large to decode safely"):
        load_photo(_png_header_only(20000, 20000), 64)  # 400 MP: caught by Pillow's own check
    with pytest.raises(ImageError, match=r"9000x9000 image \(81 MP\) is too large"):
        load_photo(_png_header_only(9000, 9000), 64)  # under Pillow's limits, over ours


def test_pixel_cap_is_a_parameter():
    data = _encode(_smooth_image(178, 218), "PNG")
    with pytest.raises(ImageError, match="limit"):
        load_photo(data, 64, max_pixels=10_000)


def test_truncated_jpeg(real_faces):
    data = real_faces[0].read_bytes()
    with pytest.raises(ImageError, match="truncated"):
        load_photo(data[: len(data) // 2], 64)


def test_animated_gif_refused_still_gif_accepted():
    frames = [_smooth_image(178, 218).convert("P"), Image.new("P", (178, 218), 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageError, match="animated .*2 frames"):
        load_photo(buf.getvalue(), 64)
    assert load_photo(_encode(frames[0], "GIF"), 64).shape == (3, 64, 64)


def test_empty_file(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_photo(empty, 64)
    with pytest.raises(ImageError, match="empty"):
        load_photo(b"", 64)


def test_non_image_and_missing_file(tmp_path: Path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels\n" * 10)
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_photo(text, 64)
    with pytest.raises(ImageError, match="no such file"):
        load_photo(tmp_path / "absent.png", 64)
    with pytest.raises(ImageError, match="is a folder"):
        load_photo(tmp_path, 64)


def test_unsupported_format_is_named():
    data = _encode(_smooth_image(178, 218), "TIFF")
    with pytest.raises(ImageError, match="not one of JPEG"):
        load_photo(data, 64)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
