"""An uploaded photo costs about its decoded size: the pixel and memory budget is checked from the
header, 16-bit pixels are converted without float64 copies, and the editor decodes a photo once
(issue 27)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceedit import images
from faceedit.images import ImageError, face_array, load_photo, open_photo

REPO = Path(__file__).resolve().parents[1]


def png16(width: int, height: int, bit_depth: int = 16, colour: int = 0) -> bytes:
    """A valid greyscale PNG (16-bit by default) of a horizontal ramp, built without decoding it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ramp = (np.linspace(0, 65535, width).astype(">u2")).tobytes()
    row = b"\x00" + ramp
    z = zlib.compressobj(1)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_sixteen_bit_rounds_like_the_exact_formula():
    v = np.array([[0, 128, 129, 257, 32767, 65534, 65535]], dtype=np.uint16)
    got = images._to_uint8(v, "I;16")
    assert got.tolist() == np.rint(v.astype(np.float64) * 255 / 65535).astype(np.uint8).tolist()
    assert images._to_uint8(np.array([[0.0, 0.5, 1.0]], np.float32), "F").tolist() == [[0, 128, 255]]


def test_large_sixteen_bit_photo_is_shrunk_before_conversion():
    data = png16(3000, 2400)
    img = open_photo(data, 64, keep_side=256)
    assert img.mode == "RGB" and 256 <= max(img.size) < 600  # shrunk, not converted at 7.2 MP
    face = load_photo(data, 64)
    # the ramp: dark on the left of the crop, bright on the right, like the full-size conversion
    exact = face_array(Image.fromarray(images._to_uint8(np.asarray(Image.open(io.BytesIO(data))), "I;16"),
                                       "L"), 64)
    assert np.abs(face.astype(int) - exact.astype(int)).max() <= 2


def test_sixteen_bit_upload_memory_is_about_its_decoded_size(tmp_path):
    """A 25 MP 16-bit PNG (50 MB decoded): the editor's whole encode peaks well under the copies the
    float64 conversion made (8 bytes a pixel: 200 MB for one of them)."""
    path = tmp_path / "big16.png"
    path.write_bytes(png16(5000, 5000))
    code = ("import resource, sys\nfrom faceedit.images import open_photo, face_array\n"
            "from faceedit.editor import crop_preview\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "im = open_photo(sys.argv[1], 64, keep_side=256); face_array(im, 64); crop_preview(im)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 120, "MB of peak memory growth"


def test_memory_budget_is_checked_from_the_header(monkeypatch):
    header_only = png16(4000, 4000)[:33] + b"\x00\x00\x00\x00IEND\xaeB`\x82"  # no pixel data at all
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 16 * 2**20)
    with pytest.raises(ImageError, match=r"4000x4000 I;16 image needs about 31 MB to decode, over the 16 MB"):
        load_photo(header_only, 64)


def test_the_editor_decodes_a_photo_once(monkeypatch, tmp_path):
    from faceedit.editor import Editor

    calls = []
    real = ImageFile.ImageFile.load
    def load(self):  # a call with tiles left decodes the file; later calls return the pixels
        if self.tile:
            calls.append(self.format)
        return real(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 240, 3), dtype=np.uint8)).save(path)
    editor = Editor.__new__(Editor)  # encode's own work only: the model's part is stubbed
    editor.size = 16
    editor.encode_array = lambda face: np.zeros(4)
    editor.decode = lambda z: np.zeros((16, 16, 3), np.uint8)
    enc = editor.encode(path, align=False)  # the centre-crop path (the aligned one: test_align.py)
    assert calls == ["PNG"]
    assert enc.face.shape == (16, 16, 3) and max(enc.preview.shape[:2]) == 256
