"""faceedit/celeba.py and faceedit/prepare.py: reading CelebA folders, bad input, the cache."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceedit import prepare as prepare_module
from faceedit.attributes import ATTRIBUTES
from faceedit.cache import FILES, Cache, CacheError
from faceedit.celeba import CelebAError, list_celeba, read_attr_file, read_attr_table
from faceedit.cli import main
from faceedit.images import ImageError
from faceedit.prepare import DuplicateImagesWarning, carve_split, prepare


# ---------------------------------------------------------------------------- a tiny CelebA folder

def _jpeg(i: int) -> bytes:
    """A distinct 178x218 JPEG per i (a coloured gradient with a dark square that moves with i)."""
    y, x = np.mgrid[0:218, 0:178]
    rgb = np.stack([(x + 7 * i) % 256, (y + 13 * i) % 256, np.full_like(x, (37 * i) % 256)], -1)
    rgb[60 + i % 50:90 + i % 50, 50:80] = 0
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_celeba(root: Path, n: int = 8, seed: int = 0, crlf: bool = True, count: int | None = None,
                 names: tuple[str, ...] = ATTRIBUTES, partition: list[int] | None = None) -> np.ndarray:
    """Write a CelebA-layout folder of n images; returns the labels (n, 40) int8 0/1 in `names` order."""
    labels = np.random.default_rng(seed).integers(0, 2, (n, len(names))).astype(np.int8)
    (root / "img_align_celeba").mkdir(parents=True)
    rows = [str(n if count is None else count), " ".join(names) + " "]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        (root / "img_align_celeba" / name).write_bytes(_jpeg(i))
        rows.append(name + "".join(f" {v:2d}" for v in 2 * labels[i] - 1))  # runs of spaces
    eol = "\r\n" if crlf else "\n"
    (root / "list_attr_celeba.txt").write_text(eol.join(rows) + eol, newline="")
    if partition is not None:
        lines = [f"{i + 1:06d}.jpg {p}" for i, p in enumerate(partition)]
        (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return labels


def _edit_attr_line(root: Path, line_no: int, new: str | None) -> None:
    """Replace (or, with None, delete) line `line_no` (1-based) of the attr file."""
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    if new is None:
        del lines[line_no - 1]
    else:
        lines[line_no - 1] = new
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- reader

@pytest.mark.parametrize("crlf", [True, False])
def test_reader_round_trip(tmp_path: Path, crlf: bool):
    labels = write_celeba(tmp_path, n=6, crlf=crlf, count=999)  # a wrong count line: rows are trusted
    listing = list_celeba(tmp_path)
    assert listing.files == tuple(f"{i:06d}.jpg" for i in range(1, 7))
    np.testing.assert_array_equal(listing.labels, labels)
    assert listing.labels.dtype == np.int8 and listing.partition is None and listing.skipped == ()
    assert all(p.is_file() for p in listing.paths)
    names, table = read_attr_file(tmp_path / "list_attr_celeba.txt")
    assert names == list(ATTRIBUTES)
    np.testing.assert_array_equal(table, labels)


def test_torchvision_layout(tmp_path: Path):
    labels = write_celeba(tmp_path / "celeba", n=3)
    listing = list_celeba(tmp_path)
    assert listing.root == tmp_path / "celeba"
    np.testing.assert_array_equal(listing.labels, labels)


def test_columns_in_another_order_are_reordered(tmp_path: Path):
    shuffled = tuple(reversed(ATTRIBUTES))
    labels = write_celeba(tmp_path, n=4, names=shuffled)
    np.testing.assert_array_equal(list_celeba(tmp_path).labels, labels[:, ::-1])


def test_partition_file_is_used(tmp_path: Path):
    write_celeba(tmp_path, n=6, partition=[0, 0, 1, 2, 0, 2])
    assert list_celeba(tmp_path).partition.tolist() == [0, 0, 1, 2, 0, 2]


def test_real_attr_file_trusts_rows_not_count_line(real_celeba):
    path = real_celeba.parent / "list_attr_celeba_20k.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    names, labels = read_attr_file(path)
    assert path.read_text().split()[0] == "202599"
    assert labels.shape == (20000, 40) and names == list(ATTRIBUTES)
    row = path.read_text().splitlines()[2 + 12345].split()
    assert labels[12345].tolist() == [int(v == "1") for v in row[1:]]


BAD_CASES = {
    # case: (line to replace, new text or None to delete, expected message, items skipped with skip_bad)
    "too few values": (4, "000002.jpg" + " 1" * 39, r"list_attr_celeba\.txt:4: 000002\.jpg: 39 values, expected 40", 1),
    "value not 1/-1": (5, "000003.jpg" + " 1" * 39 + " 0", r"list_attr_celeba\.txt:5: 000003\.jpg: value '0', expected 1 or -1", 1),
    # 000004's row becomes a second 000001 row: the row is bad and image 000004 has no label.
    "listed twice": (6, "000001.jpg" + " 1" * 40, r"list_attr_celeba\.txt:6: 000001\.jpg is listed twice \(first on line 3\)", 2),
    "image with no label": (6, None, r"000004\.jpg: image has no label row", 1),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_attr_rows_name_file_and_line(tmp_path: Path, case: str):
    line, new, message, n_skipped = BAD_CASES[case]
    write_celeba(tmp_path, n=6)
    _edit_attr_line(tmp_path, line, new)
    with pytest.raises(CelebAError, match=message):
        list_celeba(tmp_path)
    listing = list_celeba(tmp_path, skip_bad=True)
    assert len(listing) == 5 and len(listing.skipped) == n_skipped
    assert listing.files == tuple(sorted(listing.files)) and len(set(listing.files)) == 5


def test_missing_image_for_a_label_row(tmp_path: Path):
    write_celeba(tmp_path, n=5)
    (tmp_path / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(CelebAError, match=r"list_attr_celeba\.txt:5: image .*000003\.jpg is missing"):
        list_celeba(tmp_path)
    listing = list_celeba(tmp_path, skip_bad=True)
    assert "000003.jpg" not in listing.files and listing.skipped[0]["file"] == "000003.jpg"


def test_missing_files_and_folders(tmp_path: Path):
    with pytest.raises(CelebAError, match="no such folder"):
        list_celeba(tmp_path / "absent")
    with pytest.raises(CelebAError, match="no list_attr_celeba.txt"):
        list_celeba(tmp_path)
    with pytest.raises(CelebAError, match=r"absent\.txt: no such file"):
        read_attr_file(tmp_path / "absent.txt")
    write_celeba(tmp_path / "x", n=2)
    for f in (tmp_path / "x" / "img_align_celeba").iterdir():
        f.unlink()
    (tmp_path / "x" / "img_align_celeba").rmdir()
    with pytest.raises(CelebAError, match="img_align_celeba: no such folder"):
        list_celeba(tmp_path / "x")


def test_wrong_attribute_names(tmp_path: Path):
    write_celeba(tmp_path, n=2, names=ATTRIBUTES[:-1] + ("Old",))
    with pytest.raises(CelebAError, match="unknown: Old; missing: Young"):
        list_celeba(tmp_path)


def test_bad_partition_row(tmp_path: Path):
    write_celeba(tmp_path, n=3, partition=[0, 1, 2])
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 7\n000003.jpg 2\n")
    with pytest.raises(CelebAError, match=r"list_eval_partition\.txt:2: expected `file 0\|1\|2`"):
        list_celeba(tmp_path)


def test_limit_keeps_the_first_rows(tmp_path: Path):
    labels = write_celeba(tmp_path, n=6)
    listing = list_celeba(tmp_path, limit=4)
    assert len(listing) == 4
    np.testing.assert_array_equal(listing.labels, labels[:4])


# ---------------------------------------------------------------------------- prepare

def _read_attr_rows(path: Path, n: int) -> tuple[list[str], np.ndarray]:
    """An independent, minimal parse of a CelebA attr file (first n rows) for checking prepare."""
    lines = path.read_text().splitlines()[2:2 + n]
    files = [line.split()[0] for line in lines]
    values = np.array([[int(v) for v in line.split()[1:]] for line in lines])
    return files, (values == 1).astype(np.int8)


def test_prepare_first_500_real_faces(real_celeba, tmp_path: Path):
    out = prepare(real_celeba, tmp_path / "cache", size=64, limit=500, progress=False)
    cache = Cache.open(out)
    files, labels = _read_attr_rows(real_celeba / "list_attr_celeba.txt", 500)
    assert cache.names == tuple(files)
    np.testing.assert_array_equal(cache.labels, labels)
    for row in (0, 123, 499):  # pixels: an independent decode + crop + resize of the source file
        img = Image.open(real_celeba / "img_align_celeba" / files[row]).convert("RGB")
        expected = np.asarray(img.crop((15, 35, 163, 183)).resize((64, 64), Image.Resampling.BOX))
        np.testing.assert_array_equal(cache.images[row], expected.transpose(2, 0, 1))
    m = cache.manifest
    assert m["count"] == 500 and m["size"] == 64 and m["crop"]["box_178x218"] == [15, 35, 163, 183]
    assert m["split"]["carved"] and m["split"]["seed"] == 0 and "no list_eval_partition" in m["split"]["source"]
    assert m["split"]["counts"] == {"train": 450, "val": 25, "test": 25}
    assert m["duplicates"] == [] and m["skipped"]["count"] == 0 and m["content_hash"].startswith("sha256:")
    # Two prepares (parallel and in-process) give the same cache, byte for byte.
    again = prepare(real_celeba, tmp_path / "again", size=64, limit=500, workers=1, progress=False)
    for name in FILES:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_prepare_tiny_folder_round_trip_and_seeded_split(tmp_path: Path):
    labels = write_celeba(tmp_path / "data", n=40)
    a = Cache.open(prepare(tmp_path / "data", tmp_path / "a", size=16, progress=False))
    b = Cache.open(prepare(tmp_path / "data", tmp_path / "b", size=16, seed=1, progress=False))
    np.testing.assert_array_equal(a.labels, labels)
    assert a.images.shape == (40, 3, 16, 16) and a.split.dtype == np.uint8
    assert sorted(np.bincount(a.split, minlength=3)) == [2, 2, 36]
    assert not np.array_equal(a.split, b.split), "the seed picks the carved split"
    assert a.hash != b.hash


def test_official_partition_used_when_it_has_val_and_test(tmp_path: Path):
    write_celeba(tmp_path / "data", n=6, partition=[0, 0, 1, 2, 0, 2])
    cache = Cache.open(prepare(tmp_path / "data", tmp_path / "c", size=16, progress=False))
    assert cache.split.tolist() == [0, 0, 1, 2, 0, 2] and not cache.manifest["split"]["carved"]


def test_partition_without_val_test_rows_is_carved(tmp_path: Path):
    write_celeba(tmp_path / "data", n=40, partition=[0] * 40)
    m = Cache.open(prepare(tmp_path / "data", tmp_path / "c", size=16, progress=False)).manifest
    assert m["split"]["carved"] and "no val/test rows" in m["split"]["source"]


def test_carve_split_counts_and_determinism():
    s = carve_split(1000, seed=3, fractions=(0.8, 0.1, 0.1))
    assert np.bincount(s).tolist() == [800, 100, 100]
    assert np.array_equal(s, carve_split(1000, seed=3, fractions=(0.8, 0.1, 0.1)))


def test_duplicates_reported_and_kept_in_one_split(tmp_path: Path):
    data = tmp_path / "data"
    write_celeba(data, n=60)
    images = data / "img_align_celeba"
    for copy in ("000030.jpg", "000055.jpg"):
        (images / copy).write_bytes((images / "000002.jpg").read_bytes())
    for seed in range(6):  # whatever the carved split, the three copies share one split
        with pytest.warns(DuplicateImagesWarning, match="000002.jpg = 000030.jpg = 000055.jpg"):
            cache = Cache.open(prepare(data, tmp_path / f"c{seed}", size=16, seed=seed, progress=False))
        assert cache.manifest["duplicates"] == [["000002.jpg", "000030.jpg", "000055.jpg"]]
        assert len({cache.split[1], cache.split[29], cache.split[54]}) == 1


def test_duplicates_across_official_partition_are_moved(tmp_path: Path):
    data = tmp_path / "data"
    write_celeba(data, n=4, partition=[0, 1, 2, 2])
    images = data / "img_align_celeba"
    (images / "000004.jpg").write_bytes((images / "000001.jpg").read_bytes())
    with pytest.warns(DuplicateImagesWarning):
        cache = Cache.open(prepare(data, tmp_path / "c", size=16, progress=False))
    assert cache.split.tolist() == [0, 1, 2, 0]
    assert cache.manifest["split"]["moved_duplicates"] == ["000004.jpg"]


def test_truncated_jpeg_is_an_error_or_skipped(tmp_path: Path):
    data = tmp_path / "data"
    write_celeba(data, n=5)
    bad = data / "img_align_celeba" / "000003.jpg"
    bad.write_bytes(bad.read_bytes()[:400])
    with pytest.raises(CelebAError, match=r"000003\.jpg: unreadable or truncated"):
        prepare(data, tmp_path / "c", size=16, progress=False)
    assert not (tmp_path / "c").exists()
    cache = Cache.open(prepare(data, tmp_path / "c", size=16, skip_bad=True, progress=False))
    assert "000003.jpg" not in cache.names and len(cache) == 4
    assert cache.manifest["skipped"]["count"] == 1
    assert cache.manifest["skipped"]["items"][0]["file"] == "000003.jpg"


def test_skip_bad_counts_every_kind_in_the_manifest(tmp_path: Path):
    data = tmp_path / "data"
    write_celeba(data, n=8)
    _edit_attr_line(data, 4, "000002.jpg 1 1")  # too few values
    (data / "img_align_celeba" / "000005.jpg").unlink()  # missing image
    (data / "img_align_celeba" / "999999.jpg").write_bytes(_jpeg(99))  # no label row
    cache = Cache.open(prepare(data, tmp_path / "c", size=16, skip_bad=True, progress=False))
    skipped = {item["file"] for item in cache.manifest["skipped"]["items"]}
    assert skipped == {"000002.jpg", "000005.jpg", "999999.jpg"}
    assert len(cache) == 6 and cache.manifest["skipped"]["count"] == 3


def test_failed_prepare_leaves_no_cache_and_keeps_the_old_one(tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    write_celeba(data, n=6)
    old = prepare(data, tmp_path / "cache", size=16, progress=False)
    before = (old / "images.npy").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepare_module, "_content_hash", fail)  # fails after images.npy is written
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(data, tmp_path / "new", size=16, progress=False)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(data, tmp_path / "cache", size=32, progress=False)
    assert not (tmp_path / "new").exists()
    assert (old / "images.npy").read_bytes() == before and Cache.open(old).size == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data"], "no temporary folders left"


def test_refuses_to_replace_a_folder_that_is_not_a_cache(tmp_path: Path):
    write_celeba(tmp_path / "data", n=2)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(CacheError, match="not a faceedit cache"):
        prepare(tmp_path / "data", tmp_path / "photos", size=16, progress=False)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
    (tmp_path / "empty").mkdir()  # an empty folder is fine to fill
    assert Cache.open(prepare(tmp_path / "data", tmp_path / "empty", size=16, progress=False)).size == 16


def test_bad_arguments(tmp_path: Path):
    write_celeba(tmp_path / "data", n=2)
    for kwargs, message in [({"size": 4}, "size 4"), ({"limit": 0}, "limit 0"),
                            ({"split": (0.5, 0.1, 0.1)}, "summing to 1")]:
        with pytest.raises(ValueError, match=message):
            prepare(tmp_path / "data", tmp_path / "c", progress=False, **kwargs)


def test_cli_prepare(tmp_path: Path, capsys):
    write_celeba(tmp_path / "data", n=10)
    code = main(["prepare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "c"),
                 "--size", "16", "--limit", "8", "--seed", "2", "--quiet"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert summary["count"] == 8 and Cache.open(tmp_path / "c").manifest["split"]["seed"] == 2
    (tmp_path / "data" / "img_align_celeba" / "000001.jpg").unlink()
    assert main(["prepare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "d"), "--quiet"]) == 2
    assert "000001.jpg is missing" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["prepare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "d"),
                     "--quiet", "--skip-bad", "--size", "16"]) == 0


def test_errors_are_value_errors():
    assert issubclass(CelebAError, ValueError) and issubclass(ImageError, ValueError)
    assert read_attr_table  # the table reader is public for callers that need file names
