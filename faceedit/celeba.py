"""Reading a CelebA folder: the official layout and torchvision's.

Official layout (Liu et al. 2015, "Deep Learning Face Attributes in the Wild"):

    ROOT/img_align_celeba/000001.jpg ...     178x218 aligned faces
    ROOT/list_attr_celeba.txt                a count line, the 40 names, then `file v1 ... v40` (1/-1)
    ROOT/list_eval_partition.txt (optional)  `file p` with p = 0/1/2 = train/val/test

torchvision's layout is the same one level down: ROOT/celeba/... . Lines may end in CRLF or LF and
columns are separated by runs of spaces. The count line is not trusted (CelebA's own 20k excerpt
still says 202599): the rows are the data.

Every error is a `CelebAError` (a ValueError) naming the file and line. With `skip_bad=True` a bad
row or image is skipped instead and reported in `CelebAListing.skipped`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceedit.attributes import ATTRIBUTES

ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_DIR = "img_align_celeba"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class CelebAError(ValueError):
    """A CelebA folder or file that cannot be read as CelebA; the message names file and line."""


@dataclass(frozen=True)
class AttrTable:
    """The parsed rows of a `list_attr_celeba.txt`."""

    names: list[str]  # attribute names, in the file's column order
    files: list[str]  # image file name per row
    labels: np.ndarray  # (N, len(names)) int8 in {0, 1}
    lines: list[int]  # 1-based line number of each row (for error messages)
    skipped: list[dict] = field(default_factory=list)  # {"file", "line", "reason"} per skipped row


def read_attr_file(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Attribute names and labels of a `list_attr_celeba.txt`.

    Returns (names, labels): names as in the file (40 for CelebA), labels int8 (N, len(names)) with
    1 where the file says 1 and 0 where it says -1. Raises CelebAError naming file and line.
    """
    table = read_attr_table(path)
    return table.names, table.labels


def read_attr_table(path: str | Path, skip_bad: bool = False) -> AttrTable:
    """Parse `list_attr_celeba.txt` into an AttrTable (file names, labels, line numbers).

    The first line is a count when it is a single integer (ignored: the rows are trusted); the next
    line holds the attribute names. Wrong value counts, values other than 1/-1 and a file listed
    twice are errors, or skipped rows with `skip_bad`.
    """
    path = Path(path)
    lines = _read_lines(path)
    pos, names = _header(path, lines)
    width = len(names)
    files: list[str] = []
    rows: list[list[str]] = []
    line_nos: list[int] = []
    skipped: list[dict] = []
    seen: dict[str, int] = {}
    for i in range(pos + 1, len(lines)):
        parts = lines[i].split()
        if not parts:
            continue
        reason = _row_problem(parts, width, seen)
        if reason is not None:
            if not skip_bad:
                raise CelebAError(f"{path}:{i + 1}: {reason}")
            skipped.append({"file": parts[0], "line": i + 1, "reason": reason})
            continue
        seen[parts[0]] = i + 1
        files.append(parts[0])
        rows.append(parts[1:])
        line_nos.append(i + 1)
    values = np.array(rows, dtype=np.int8).reshape(len(rows), width)  # (N, 40) in {-1, 1}
    labels = (values > 0).astype(np.int8)  # (N, 40) in {0, 1}
    return AttrTable(names, files, labels, line_nos, skipped)


def _header(path: Path, lines: list[str]) -> tuple[int, list[str]]:
    """(index of the names line, the names), skipping the count line when there is one."""
    pos = 0
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    if pos < len(lines) and _is_int(lines[pos].split()):
        pos += 1  # the count line: not trusted, rows are counted instead
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    if pos >= len(lines):
        raise CelebAError(f"{path}: no attribute-name line (expected a count line, then the names)")
    names = lines[pos].split()
    if len(set(names)) != len(names) or any(_is_number(n) for n in names):
        raise CelebAError(f"{path}:{pos + 1}: expected the attribute names, got {lines[pos][:80]!r}")
    return pos, names


def _row_problem(parts: list[str], width: int, seen: dict[str, int]) -> str | None:
    """Why a split attribute row is bad, or None when it is good."""
    name, values = parts[0], parts[1:]
    if len(values) != width:
        return f"{name}: {len(values)} values, expected {width} (one 1/-1 per attribute)"
    bad = [v for v in values if v not in ("1", "-1")]
    if bad:
        return f"{name}: value {bad[0]!r}, expected 1 or -1"
    if name in seen:
        return f"{name} is listed twice (first on line {seen[name]})"
    return None


def read_partition_file(path: str | Path, skip_bad: bool = False) -> tuple[dict[str, int], list[dict]]:
    """`list_eval_partition.txt` -> ({file: 0/1/2}, skipped rows). Errors name file and line."""
    path = Path(path)
    out: dict[str, int] = {}
    lines_of: dict[str, int] = {}
    skipped: list[dict] = []
    for i, line in enumerate(_read_lines(path)):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            reason = f"expected `file 0|1|2` (train/val/test), got {line.strip()[:80]!r}"
        elif parts[0] in out:
            reason = f"{parts[0]} is listed twice (first on line {lines_of[parts[0]]})"
        else:
            out[parts[0]], lines_of[parts[0]] = int(parts[1]), i + 1
            continue
        if not skip_bad:
            raise CelebAError(f"{path}:{i + 1}: {reason}")
        skipped.append({"file": parts[0], "line": i + 1, "reason": reason})
    return out, skipped


@dataclass(frozen=True)
class CelebAListing:
    """What a CelebA folder holds, checked: one entry per labelled image that exists."""

    root: Path  # the folder holding list_attr_celeba.txt and img_align_celeba/
    files: tuple[str, ...]  # image file names, in attr-file order
    labels: np.ndarray  # (N, 40) int8 in {0, 1}, columns in ATTRIBUTES order
    partition: np.ndarray | None  # (N,) uint8 0/1/2 from list_eval_partition.txt, or None
    skipped: tuple[dict, ...] = ()  # {"file", "line"?, "reason"} per item left out (skip_bad)

    @property
    def image_dir(self) -> Path:
        return self.root / IMAGE_DIR

    @property
    def paths(self) -> list[Path]:
        return [self.image_dir / f for f in self.files]

    def __len__(self) -> int:
        return len(self.files)


def find_root(data_dir: str | Path) -> Path:
    """The folder with list_attr_celeba.txt: `data_dir` itself or torchvision's `data_dir/celeba`."""
    data_dir = Path(data_dir)
    for root in (data_dir, data_dir / "celeba"):
        if (root / ATTR_FILE).is_file():
            return root
    if not data_dir.is_dir():
        raise CelebAError(f"{data_dir}: no such folder (expected a CelebA folder)")
    raise CelebAError(
        f"{data_dir}: no {ATTR_FILE} here or in {data_dir / 'celeba'} "
        f"(expected CelebA's layout: {IMAGE_DIR}/*.jpg and {ATTR_FILE})"
    )


def list_celeba(data_dir: str | Path, limit: int | None = None, skip_bad: bool = False) -> CelebAListing:
    """Read and cross-check a CelebA folder: labels, images and (when present) the partition.

    `limit` keeps the first N label rows. Errors (CelebAError naming the file and line): a missing
    file or folder, a bad label row, a file listed twice, an image in the folder with no label row,
    a label row whose image is missing. With `skip_bad` these items are skipped and reported.
    """
    root = find_root(data_dir)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise CelebAError(f"{image_dir}: no such folder (expected the {IMAGE_DIR}/*.jpg images)")
    attr_path = root / ATTR_FILE
    table = read_attr_table(attr_path, skip_bad=skip_bad)
    columns = _attribute_columns(attr_path, table.names)
    skipped = list(table.skipped)
    on_disk = {e.name for e in os.scandir(image_dir) if e.name.lower().endswith(IMAGE_SUFFIXES)}
    labelled = set(table.files) | {s["file"] for s in table.skipped}
    unlabelled = sorted(on_disk - labelled)
    if unlabelled and not skip_bad:
        raise CelebAError(
            f"{image_dir / unlabelled[0]}: image has no label row in {attr_path}"
            f" ({len(unlabelled)} such images)"
        )
    skipped += [{"file": f, "reason": f"no label row in {ATTR_FILE}"} for f in unlabelled]
    keep = []
    for k, name in enumerate(table.files[: limit if limit is not None else None]):
        if name in on_disk:
            keep.append(k)
            continue
        where = f"{attr_path}:{table.lines[k]}"
        if not skip_bad:
            raise CelebAError(f"{where}: image {image_dir / name} is missing")
        skipped.append({"file": name, "line": table.lines[k], "reason": "image file is missing"})
    files = tuple(table.files[k] for k in keep)
    labels = np.ascontiguousarray(table.labels[keep][:, columns])  # (N, 40) in ATTRIBUTES order
    partition, part_skipped = _partition_for(root, files, skip_bad)
    return CelebAListing(root, files, labels, partition, tuple(skipped + part_skipped))


def _partition_for(root: Path, files: tuple[str, ...], skip_bad: bool) -> tuple[np.ndarray | None, list]:
    """(N,) uint8 partition of `files` from list_eval_partition.txt, or None where it is absent."""
    path = root / PARTITION_FILE
    if not path.is_file():
        return None, []
    table, skipped = read_partition_file(path, skip_bad=skip_bad)
    missing = [f for f in files if f not in table]
    if missing:
        # A partial partition cannot be mixed with a carved split; name the first gap.
        raise CelebAError(f"{path}: no row for {missing[0]} ({len(missing)} labelled images have none)")
    return np.array([table[f] for f in files], dtype=np.uint8), skipped


def _attribute_columns(path: Path, names: list[str]) -> list[int]:
    """Column index in the file of each attribute in ATTRIBUTES order; an error if they differ."""
    if sorted(names) != sorted(ATTRIBUTES):
        extra = sorted(set(names) - set(ATTRIBUTES))
        lacking = sorted(set(ATTRIBUTES) - set(names))
        raise CelebAError(
            f"{path}: attribute names differ from CelebA's 40"
            f" (unknown: {', '.join(extra) or 'none'}; missing: {', '.join(lacking) or 'none'})"
        )
    return [names.index(a) for a in ATTRIBUTES]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CelebAError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark (Windows editors) is not text
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CelebAError(f"{path}:{line}: not a text file (byte {e.start} is not UTF-8)") from None
    return text.splitlines()  # handles CRLF and LF


def _is_int(parts: list[str]) -> bool:
    return len(parts) == 1 and parts[0].lstrip("-").isdigit()


def _is_number(s: str) -> bool:
    return s.lstrip("-").isdigit()
