"""Face alignment: the similarity fit, the warp, paste-back, the detector on real faces, bad input."""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceedit.align import (FRAME, MIN_FACE, AlignError, Face, align_files, align_photo, apply,
                            canonical_landmarks, check_face, invert, paste_back, robust_mean,
                            similarity, soft_mask, warp)
from faceedit.cli import main as cli


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx],
                     [scale * math.sin(a), scale * math.cos(a), ty]])


def _celeba(root: Path, i: int) -> np.ndarray:
    return np.asarray(Image.open(root / "img_align_celeba" / f"{i:06d}.jpg").convert("RGB"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-10))


def _crop(frame: np.ndarray) -> np.ndarray:
    return frame[35:183, 15:163]  # the model's crop of the 178x218 frame


# ---------------------------------------------------------------------------- geometry, no detector

def test_similarity_recovers_a_known_transform_from_constructed_landmarks():
    canon = canonical_landmarks()
    m_true = _similarity(17.0, 0.63, 40.0, -12.5)  # photo -> frame
    photo_points = apply(invert(m_true), canon)  # where a face with these landmarks sits in a photo
    m = similarity(photo_points, canon)
    np.testing.assert_allclose(m, m_true, atol=1e-9)
    # a reflection is never returned, even for mirrored points: the determinant stays positive
    mirrored = photo_points * np.array([-1.0, 1.0])
    assert np.linalg.det(similarity(mirrored, canon)[:, :2]) > 0


def test_weighted_similarity_trusts_the_steady_landmarks():
    from faceedit.align import landmark_weights

    canon = canonical_landmarks()
    m_true = _similarity(-8.0, 1.7, -30.0, 12.0)
    true_points = apply(invert(m_true), canon)
    found = true_points.copy()
    found[2] += [9.0, -6.0]  # the nose tip found off its place (it wanders most)
    w = landmark_weights()
    assert w.argmax() in (0, 1) and w.argmin() == 2 and w.sum() == pytest.approx(1.0)
    err = {k: np.abs(apply(similarity(found, canon, ww), true_points) - canon).max()
           for k, ww in (("equal", None), ("weighted", w))}
    assert err["weighted"] < err["equal"] / 2
    with pytest.raises(ValueError, match="non-negative weights"):
        similarity(found, canon, -w)


def test_similarity_rejects_bad_points():
    with pytest.raises(ValueError, match="coincide"):
        similarity(np.ones((5, 2)), canonical_landmarks())
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        similarity(np.ones((5, 3)), np.ones((5, 3)))


def test_canonical_landmarks_are_a_plausible_celeba_face():
    c = canonical_landmarks()  # left eye, right eye, nose, mouth left, mouth right
    assert c.shape == (5, 2)
    assert c[0, 0] < c[1, 0] and c[3, 0] < c[4, 0]  # left before right
    assert c[0, 1] < c[2, 1] < c[3, 1]  # eyes above nose above mouth
    assert abs((c[0, 0] + c[1, 0]) / 2 - FRAME[0] / 2) < 8  # face centred horizontally


def test_robust_mean_ignores_outliers():
    rng = np.random.default_rng(0)
    pts = rng.normal([50, 80], 1.0, size=(200, 2))
    pts[:10] = [500, -400]  # 5% wild detections
    np.testing.assert_allclose(robust_mean(pts), [50, 80], atol=0.3)


def test_warp_is_exact_for_a_shift_and_mirrors_outside_the_photo():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, size=(300, 260, 3), dtype=np.uint8)
    out = warp(photo, _similarity(0, 1.0, -20, -30))  # frame pixel (x, y) = photo (x + 20, y + 30)
    np.testing.assert_array_equal(out, photo[30:30 + FRAME[1], 20:20 + FRAME[0]])
    edge = warp(photo, _similarity(0, 1.0, 10, 0))  # 10 columns left of the photo's edge
    np.testing.assert_array_equal(edge[:, 9::-1][:, :9], photo[:218, 1:10])  # mirrored, not black


def test_paste_back_of_an_unedited_face_leaves_the_photo_alone():
    import cv2

    rng = np.random.default_rng(2)
    low = rng.integers(0, 256, size=(25, 20, 3), dtype=np.uint8)  # a smooth "photo"
    photo = np.asarray(Image.fromarray(low).resize((500, 400), Image.BICUBIC))
    m = _similarity(12, 0.7, -60, -40)
    face = warp(photo, m)
    small = np.asarray(Image.fromarray(_crop(face)).resize((64, 64), Image.BOX))
    recon = np.clip(small.astype(int) + rng.integers(-12, 13, size=small.shape), 0, 255).astype(np.uint8)
    # the change: edited == unedited adds nothing anywhere
    np.testing.assert_array_equal(paste_back(photo, m, recon, recon, "change"), photo)
    # the face: inside the mask the photo moves by less than the reconstruction's own error there,
    # outside the mask not at all
    pasted = paste_back(photo, m, recon, recon, "face").astype(float)
    mask = _inverse_mask(m, photo.shape)
    frame = np.zeros((218, 178, 3), np.float32)
    frame[35:183, 15:163] = np.asarray(Image.fromarray(recon).resize((148, 148), Image.BICUBIC))
    recon_in_photo = cv2.warpAffine(frame, m, (500, 400), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inside, outside = mask > 0, mask == 0
    change = np.abs(pasted - photo)
    recon_error = np.abs(recon_in_photo - photo)
    assert change[outside].max() == 0
    assert 0 < np.sqrt((change[inside] ** 2).mean()) <= np.sqrt((recon_error[inside] ** 2).mean())


def _inverse_mask(m: np.ndarray, shape) -> np.ndarray:
    import cv2

    return cv2.warpAffine(soft_mask(), m, (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def test_paste_back_of_a_change_moves_only_the_masked_face():
    photo = np.full((300, 300, 3), 100, dtype=np.uint8)
    m = _similarity(0, 1.0, -60, -40)
    unedited = np.full((64, 64, 3), 100, dtype=np.uint8)
    edited = unedited.copy()
    edited[40:50, 20:44] = 160  # a brighter "mouth"
    out = paste_back(photo, m, edited, unedited, "change").astype(int)
    changed = np.argwhere(np.abs(out - 100).max(axis=2) > 5)
    # the mouth region of the crop (rows 40-50 of 64 -> frame y 127..151, x 61..117), in photo pixels
    assert changed.size and changed[:, 0].min() >= 127 + 40 - 3 and changed[:, 0].max() <= 151 + 40 + 3
    assert changed[:, 1].min() >= 61 + 60 - 3 and changed[:, 1].max() <= 117 + 60 + 3
    with pytest.raises(ValueError, match="paste mode"):
        paste_back(photo, m, edited, unedited, "blur")


def test_check_face_refuses_small_and_profile_faces():
    canon = canonical_landmarks()
    frontal = Face((0, 0, 100, 120), canon, 0.99)
    check_face(frontal)
    small = Face((0, 0, MIN_FACE - 6, MIN_FACE - 4), canon * 0.3, 0.99)
    with pytest.raises(AlignError, match=rf"too small to use: {MIN_FACE - 4} px across, expected at least {MIN_FACE} px"):
        check_face(small)
    profile = canon.copy()
    profile[2, 0] = canon[1, 0] + 15  # nose well past the far eye: turned to the side
    with pytest.raises(AlignError, match="profile view"):
        check_face(Face((0, 0, 100, 120), profile, 0.99))


# ---------------------------------------------------------------------------- the detector on real faces

def _canvas(face: np.ndarray, m: np.ndarray, size=(420, 380)) -> np.ndarray:
    """The aligned face moved by m (frame -> canvas) into a larger canvas with a mirrored border."""
    return warp(face, m, size)


def test_alignment_undoes_a_random_similarity_on_real_faces(real_celeba):
    rng = np.random.default_rng(3)
    psnrs, errs = [], []
    canon = canonical_landmarks()
    for i in (11, 22, 33, 44, 55, 66):
        face = _celeba(real_celeba, 18000 + i)
        m = _similarity(rng.uniform(-20, 20), rng.uniform(0.9, 2.2), 0, 0)
        corners = apply(m, np.array([[0, 0], [178, 0], [0, 218], [178, 218]], float))
        m[:, 2] = -corners.min(0) + rng.uniform(5, 40, size=2)
        size = tuple(int(v) for v in corners.max(0) - corners.min(0) + 80)
        got = align_photo(_canvas(face, m, size))
        psnrs.append(_psnr(_crop(got.image), _crop(face)))
        # the landmarks, mapped back to the original frame, land near the canonical positions
        errs.append(np.abs(apply(got.matrix @ np.vstack([m, [0, 0, 1]]), canon) - canon).max())
    assert np.median(psnrs) > 22, psnrs
    assert np.median(errs) < 3, errs


@pytest.mark.slow  # 300 detections: ~8 s on a free 2-core CPU
def test_canonical_positions_are_recovered_from_aligned_celeba_faces(real_celeba):
    from faceedit.align import Detector

    det = Detector(min_size=40)
    found = [det.detect(_celeba(real_celeba, i)) for i in range(18701, 19001)]
    pts = np.array([faces[0].landmarks for faces in found if faces])
    assert len(pts) >= 295  # CelebA's aligned faces are nearly all found
    mean = np.stack([robust_mean(pts[:, j]) for j in range(5)])
    np.testing.assert_allclose(mean, canonical_landmarks(), atol=1.0)


def test_real_photos_align_and_the_editor_frame_is_celeba(real_faces):
    for path in real_faces:
        photo = np.asarray(Image.open(path).convert("RGB"))
        got = align_photo(photo)
        assert got.image.shape == (218, 178, 3) and got.face.score > 0.9
        off = np.linalg.norm(apply(got.matrix, got.face.landmarks) - canonical_landmarks(), axis=1)
        assert off[[0, 1, 3, 4]].max() < 6 and off[2] < 10  # eyes and mouth close; the nose looser


# ---------------------------------------------------------------------------- bad input, through the CLI

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height: a huge photo, as open() sees it before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_align_cli_writes_celeba_layout_and_reports_bad_photos(real_faces, real_celeba, tmp_path, capsys):
    good = real_faces[0]
    face = Image.open(good).convert("RGB")
    noise = _save(Image.fromarray(np.random.default_rng(4).integers(0, 256, (200, 240, 3), dtype=np.uint8)),
                  tmp_path / "noise.png")
    tiny_face = Image.new("RGB", (600, 500), (200, 200, 200))
    tiny_face.paste(Image.open(real_celeba / "img_align_celeba" / "000005.jpg").resize((62, 76)), (300, 200))
    tiny = _save(tiny_face, tmp_path / "tiny.jpg", quality=95)
    grey = _save(face.convert("L"), tmp_path / "grey.png")
    exif = Image.open(good).rotate(90, expand=True)  # stored sideways, EXIF says turn it back
    ex = exif.getexif()
    ex[0x0112] = 6  # orientation: rotate 90 CW to display
    rotated = _save(exif, tmp_path / "rotated.jpg", exif=ex.tobytes(), quality=95)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(9000, 9000))
    out = tmp_path / "aligned"
    code = cli(["align", "--out", str(out), str(good), str(noise), str(tiny), str(grey), str(rotated), str(empty),
                str(huge)])
    err = capsys.readouterr().err
    assert code == 0
    report = json.loads((out / "align.json").read_text())
    assert set(report["photos"]) == {f"{good.stem}.jpg", "grey.jpg", "rotated.jpg"}
    assert f"{noise}: no face found in the 240x200 photo" in err
    assert f"{tiny}: the face is too small to use" in err and "px across, expected at least" in err
    assert f"{empty}: empty file" in err
    assert f"{huge}: 9000x9000 image (81 MP) is too large to decode safely" in err
    for name, rec in report["photos"].items():
        assert Image.open(out / name).size == (178, 218)
        assert len(rec["matrix"]) == 2 and set(rec["landmarks"]) >= {"left_eye", "mouth_right"}
    a, g, r = (np.asarray(Image.open(out / n), dtype=float) for n in (f"{good.stem}.jpg", "grey.jpg", "rotated.jpg"))
    assert _psnr(_crop(a), _crop(r)) > 25  # EXIF rotation applied before detection: the same face
    colour, grey = (np.array(list(report["photos"][n]["landmarks"].values())) for n in (f"{good.stem}.jpg", "grey.jpg"))
    assert np.abs(colour - grey).mean() < 2  # greyscale: found and aligned like the colour photo
    assert not list(out.glob("*.tmp")) and [p.name for p in out.glob(".*")] == [".faceedit"]


def test_several_faces_largest_by_default_others_selectable(real_celeba, tmp_path):
    canvas = Image.new("RGB", (700, 400), (90, 120, 90))
    sizes = [(120, 147), (200, 245), (160, 196)]  # the middle one is the largest
    for k, (w, h) in enumerate(sizes):
        canvas.paste(Image.open(real_celeba / "img_align_celeba" / f"{100 + k:06d}.jpg").resize((w, h)), (20 + 230 * k, 60))
    photo = np.asarray(canvas)
    first, second = align_photo(photo), align_photo(photo, face=1)
    assert len(first.faces) == 3 and first.index == 0 and second.index == 1
    assert 250 < first.face.box[0] < 450 and first.face.size > second.face.size  # the 200 px face
    assert 480 < second.face.box[0]  # then the 160 px one
    with pytest.raises(AlignError, match=r"face 3: the photo has 3 face\(s\), numbered 0..2"):
        align_photo(photo, face=3)


def _rendered_photo(path: Path, i: int) -> Path:
    """A rendered face, enlarged, on a plain background: a photo the detector finds a face in."""
    from faceedit.synth import render_face, sample_labels

    face = render_face(sample_labels(8, 0)[i], i).convert("RGB").resize((267, 327))
    canvas = Image.new("RGB", (400, 420), (120, 130, 120))
    canvas.paste(face, (60, 40))
    return _save(canvas, path, quality=95)


def test_align_never_overwrites_a_users_file_and_reruns_into_its_own_folder(tmp_path, capsys):
    photos = [_rendered_photo(tmp_path / f"p{i}.png", i) for i in (1, 2)]
    out = tmp_path / "out"
    out.mkdir()
    mine, notes = out / "p1.jpg", out / "notes.txt"
    mine.write_bytes(b"the user's own picture")
    notes.write_text("keep me")
    args = ["align", "--out", str(out), *map(str, photos)]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "p1.jpg" in err and "did not write" in err and "--overwrite" in err and "notes.txt" not in err
    assert mine.read_bytes() == b"the user's own picture" and sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "p1.jpg"]  # refused before any work: nothing written

    (out / "align.json").write_text("{}")  # a user's align.json is named too
    mine.unlink()
    assert cli(args) == 2 and "align.json" in capsys.readouterr().err
    (out / "align.json").unlink()

    assert cli(args) == 0  # no clash: written beside the user's notes, which stay
    first = {n: (out / n).read_bytes() for n in ("p1.jpg", "p2.jpg", "align.json")}
    assert Image.open(out / "p1.jpg").size == (178, 218) and notes.read_text() == "keep me"
    assert cli(args) == 0  # a rerun into its own folder replaces only its own files
    assert {n: (out / n).read_bytes() for n in first} == first and notes.read_text() == "keep me"
    assert not list(out.glob(".*.tmp"))
    assert json.loads((out / "align.json").read_text())["photos"].keys() == {"p1.jpg", "p2.jpg"}


def test_align_overwrite_replaces_only_the_clashing_files(tmp_path):
    photo = _rendered_photo(tmp_path / "p1.png", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1.jpg").write_bytes(b"old")
    (out / "notes.txt").write_text("keep me")
    assert cli(["align", "--overwrite", "--out", str(out), str(photo)]) == 0
    assert Image.open(out / "p1.jpg").size == (178, 218) and (out / "notes.txt").read_text() == "keep me"
    assert cli(["align", "--out", str(out), str(photo)]) == 0  # recorded as faceedit's now


def test_align_refuses_to_write_a_photo_over_itself(tmp_path):
    photo = _rendered_photo(tmp_path / "p1.jpg", 1)
    before = photo.read_bytes()
    with pytest.raises(ValueError, match="would be written over it"):
        align_files([str(photo)], str(tmp_path), overwrite=True)
    assert photo.read_bytes() == before


def test_the_screenshots_rendered_photo_is_a_tilted_off_centre_face_the_detector_finds(tmp_path):
    from ui.screenshot import rendered_photo

    photo = np.asarray(Image.open(rendered_photo(tmp_path / "r.jpg")))
    got = align_photo(photo)
    m = got.matrix
    turn = math.degrees(math.atan2(m[1, 0], m[0, 0]))  # photo -> frame: undoes the 14 degree turn
    assert len(got.faces) == 1 and abs(turn + 14) < 4
    cx = got.face.box[0] + got.face.box[2] / 2
    assert cx > photo.shape[1] * 0.55  # off-centre (the page shows the whole photo, the edit pasted in)
