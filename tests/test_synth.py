"""The synthetic CelebA renderer: layout, determinism, label distribution, visible attributes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from faceedit import synth
from faceedit.attributes import ATTRIBUTES, attribute_index
from faceedit.celeba import list_celeba, read_attr_file
from faceedit.cli import main as cli_main


def _labels(*on: str) -> np.ndarray:
    row = np.zeros(len(ATTRIBUTES), dtype=np.int8)
    for name in on:
        row[attribute_index(name)] = 1
    return row


def _flip(row: np.ndarray, name: str) -> np.ndarray:
    out = row.copy()
    out[attribute_index(name)] ^= 1
    return out


def _pixels(row: np.ndarray, seed: int) -> np.ndarray:
    return np.asarray(synth.render_face(row, seed), dtype=np.float32)  # (218, 178, 3)


WOMAN = _labels("No_Beard", "Young", "Brown_Hair")
MAN = _labels("No_Beard", "Young", "Black_Hair", "Male")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A tiny set rendered with two workers (and the same set rendered in-process)."""
    root = tmp_path_factory.mktemp("synth")
    two = synth.render_dataset(root / "two", 48, seed=5, workers=2)
    one = synth.render_dataset(root / "one", 48, seed=5, workers=1)
    return one, two


# ---------------------------------------------------------------------------- layout and reader


def test_layout_and_image_format(rendered):
    from PIL import Image

    one, _ = rendered
    jpgs = sorted((one / "img_align_celeba").iterdir())
    assert [p.name for p in jpgs] == [f"{i:06d}.jpg" for i in range(1, 49)]
    for p in jpgs[:5]:
        with Image.open(p) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (178, 218)


def test_attr_file_is_celeba_format(rendered):
    one, _ = rendered
    lines = (one / "list_attr_celeba.txt").read_bytes().split(b"\r\n")
    assert lines[0] == b"48"
    assert lines[1].split() == [a.encode() for a in ATTRIBUTES]
    assert lines[1].endswith(b"Young ")  # CelebA's own names line ends in a space
    assert all(re.fullmatch(rb"\d{6}\.jpg(  1| -1){40}", row) for row in lines[2:-1])
    assert lines[-1] == b""  # the last row ends in CRLF too


def test_reader_round_trip(rendered):
    one, _ = rendered
    listing = list_celeba(one)
    assert listing.files == tuple(f"{i:06d}.jpg" for i in range(1, 49))
    np.testing.assert_array_equal(listing.labels, synth.sample_labels(48, seed=5))
    np.testing.assert_array_equal(listing.partition, synth.carve_partition(48, seed=5))


def test_prepare_reads_a_rendered_set(rendered, tmp_path):
    """The no-download path: render -> prepare -> cache, with our labels and our split."""
    from faceedit.cache import Cache
    from faceedit.prepare import prepare

    one, _ = rendered
    cache = Cache.open(prepare(one, tmp_path / "cache", size=32, workers=1, progress=False))
    assert cache.images.shape == (48, 3, 32, 32)
    np.testing.assert_array_equal(cache.labels, synth.sample_labels(48, seed=5))
    np.testing.assert_array_equal(cache.split, synth.carve_partition(48, seed=5))
    assert cache.manifest["duplicates"] == []  # every rendered face is a different picture


def test_labels_are_real_rows(rendered):
    one, _ = rendered
    names, labels = read_attr_file(one / "list_attr_celeba.txt")
    assert names == list(ATTRIBUTES)
    table = {row.tobytes() for row in synth.load_label_table()}
    assert all(row.tobytes() in table for row in labels)


# ---------------------------------------------------------------------------- determinism


def test_same_bytes_whatever_the_workers(rendered):
    one, two = rendered
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 48 + 3 + 1  # faces, 2 label files, synth.json, the folder's marker
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel


def test_another_seed_differs(tmp_path, rendered):
    one, _ = rendered
    other = synth.render_dataset(tmp_path / "s6", 48, seed=6, workers=1)
    assert (other / "list_attr_celeba.txt").read_bytes() != (one / "list_attr_celeba.txt").read_bytes()
    same = [(other / "img_align_celeba" / f).read_bytes() == (one / "img_align_celeba" / f).read_bytes()
            for f in ("000001.jpg", "000002.jpg")]
    assert not any(same)


def test_render_face_is_a_function_of_labels_and_seed():
    row = synth.sample_labels(1, seed=0)[0]
    a, b, c = _pixels(row, 7), _pixels(row, 7), _pixels(row, 8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 5  # another person


# ---------------------------------------------------------------------------- label distribution


def test_label_marginals_match_the_source_table():
    n = 2000
    table = synth.load_label_table().astype(np.float64)  # (20000, 40)
    drawn = synth.sample_labels(n, seed=0).astype(np.float64)  # (n, 40)
    p = table.mean(0)
    # A binomial bound: 4.5 standard errors of a mean of n draws (rows without replacement vary less).
    bound = 4.5 * np.sqrt(p * (1 - p) / n) + 1.0 / n
    assert np.all(np.abs(drawn.mean(0) - p) <= bound), (drawn.mean(0) - p) / bound


def test_joint_distribution_is_kept():
    """The real bias comes along: P(Smiling | Male) < P(Smiling | not Male), as in CelebA."""
    drawn = synth.sample_labels(4000, seed=1)
    male, smiling = drawn[:, attribute_index("Male")] == 1, drawn[:, attribute_index("Smiling")] == 1
    assert smiling[male].mean() + 0.07 < smiling[~male].mean()


def test_more_faces_than_rows_repeat_the_table():
    drawn = synth.sample_labels(20000 + 500, seed=2)
    np.testing.assert_array_equal(np.sort(drawn[:20000].view("S40").ravel()),
                                  np.sort(synth.load_label_table().view("S40").ravel()))


def test_partition_is_seeded_90_5_5():
    split = synth.carve_partition(2000, seed=3)
    assert np.bincount(split, minlength=3).tolist() == [1800, 100, 100]
    np.testing.assert_array_equal(split, synth.carve_partition(2000, seed=3))
    assert not np.array_equal(split, synth.carve_partition(2000, seed=4))


# ---------------------------------------------------------------------------- visible attributes
# Regions in the 178x218 image: the pose jitter moves a face by a few pixels only.
MOUTH = (slice(138, 170), slice(62, 116))
EYES = (slice(92, 122), slice(50, 128))
HAIR_TOP = (slice(48, 66), slice(70, 108))
BACKGROUND = (slice(0, 20), slice(0, 20))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smiling_changes_the_mouth(seed):
    a, b = _pixels(WOMAN, seed), _pixels(_flip(WOMAN, "Smiling"), seed)
    diff = np.abs(a - b).max(-1)  # (218, 178)
    assert (diff[MOUTH] > 40).sum() >= 40
    assert diff[BACKGROUND].max() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_open_mouth_is_dark(seed):
    closed, open_ = _pixels(MAN, seed), _pixels(_flip(MAN, "Mouth_Slightly_Open"), seed)
    assert (np.abs(closed - open_).max(-1)[MOUTH] > 40).sum() >= 30
    assert open_[MOUTH].min() < 70  # the opening


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eyeglasses_change_the_eye_region(seed):
    a, b = _pixels(MAN, seed), _pixels(_flip(MAN, "Eyeglasses"), seed)
    diff = np.abs(a - b).max(-1)
    assert (diff[EYES] > 40).sum() >= 150
    assert (diff[MOUTH] > 0).sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blond_is_brighter_than_black(seed):
    base = _flip(WOMAN, "Brown_Hair")  # no hair colour yet
    blond = _pixels(_flip(base, "Blond_Hair"), seed)[HAIR_TOP].mean()
    black = _pixels(_flip(base, "Black_Hair"), seed)[HAIR_TOP].mean()
    assert blond - black > 80


def test_every_rendered_label_changes_the_image_and_the_rest_do_not():
    for base in (WOMAN, MAN):
        for name in ATTRIBUTES:
            diff = np.abs(_pixels(base, 4) - _pixels(_flip(base, name), 4)).max(-1)
            if name in synth.RENDERED:
                assert (diff > 20).sum() >= 15, name
            else:
                assert diff.max() == 0, name


def test_head_sits_in_the_standard_crop():
    """A bald head's skin (found by flipping Pale_Skin) lies in CelebA's centre 148x148 crop
    (rows 35..182, columns 15..162), centred; only the neck runs below it."""
    bald = _labels("Bald", "No_Beard", "Young")
    for seed in range(6):
        skin = np.abs(_pixels(bald, seed) - _pixels(_flip(bald, "Pale_Skin"), seed)).max(-1) > 10
        skin[183:] = False  # the neck
        rows, cols = np.nonzero(skin)
        assert rows.min() >= 35 and cols.min() >= 15 and cols.max() <= 162, seed
        assert abs(cols.mean() - 89) < 10 and abs(rows.mean() - 113) < 10, seed


# ---------------------------------------------------------------------------- bad input and the CLI


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n >= 1"):
        synth.render_dataset(tmp_path / "x", 0)
    with pytest.raises(ValueError, match="workers=0"):
        synth.render_dataset(tmp_path / "x", 5, workers=0)
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="expected shape"):
        synth.render_face(np.zeros(39), 0)


def test_existing_folder_is_reused_or_refused(tmp_path):
    out = synth.render_dataset(tmp_path / "d", 6, seed=1, workers=1)
    stamp = (out / "list_attr_celeba.txt").stat().st_mtime_ns
    assert synth.render_dataset(out, 6, seed=1, workers=1) == out
    assert (out / "list_attr_celeba.txt").stat().st_mtime_ns == stamp  # reused, not redrawn
    with pytest.raises(ValueError, match="exists"):
        synth.render_dataset(out, 7, seed=1, workers=1)
    synth.render_dataset(out, 7, seed=1, workers=1, overwrite=True)
    assert len(list((out / "img_align_celeba").iterdir())) == 7


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["synth", "--out", str(out), "-n", "5", "--seed", "2", "--workers", "1", "--quiet"]) == 0
    assert len(list_celeba(out)) == 5
    assert cli_main(["synth", "--out", str(out), "-n", "6", "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
