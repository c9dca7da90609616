"""Writing files so that nothing a user made is lost or half-written: write to a temporary name in
the same folder, then rename (atomic on POSIX)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


MARKER = ".faceedit"  # in every folder atomic_dir writes: what it wrote, so it may replace it later
# Files that make a folder without a marker (written before markers existed) recognisably ours:
# name -> keys its JSON has. Only such a folder, holding nothing but names the project writes, is
# replaced without a marker.
LEGACY_MANIFESTS = {"config.json": ("format", "kind", "weights"), "bank.json": ("format", "methods"),
                    "manifest.json": ("content_hash",), "report.json": ("attributes",),
                    "synth.json": ("generator", "seed"), ".stage.json": ("stage", "key")}
LEGACY_NAMES = re.compile(r"(\.stage\.json|config\.json|model\.safetensors|bank\.json|vectors\.safetensors"
                          r"|manifest\.json|images\.npy|labels\.npy|split\.npy|names\.txt|report\.json"
                          r"|report\.html|[\w.-]+\.csv|[\w.-]+\.png|synth\.json|img_align_celeba"
                          r"|list_attr_celeba\.txt|list_eval_partition\.txt)")
STALE_S = 3600.0  # an unowned leftover temporary folder older than this is an interrupted run's


class OutputExists(ValueError):
    """An output folder faceedit would replace, holding files it did not write."""


def foreign_entries(path: str | Path) -> list[str]:
    """Names in the folder `path` that faceedit did not write ([] for a missing or empty folder, or
    one holding only what its marker lists; for a folder from before markers, only recognised
    project files beside a valid project manifest). A path that is a file is one foreign entry."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return []
    if path.is_symlink() or not path.is_dir():
        return [path.name]
    names = sorted(os.listdir(path))
    if (path / MARKER).is_file():
        listed = _marked(path)
        return [n for n in names if n not in listed and n not in (MARKER, ".stage.json")]
    if names and not any(_legacy_manifest(path / n) for n in names if n in LEGACY_MANIFESTS):
        return names
    return [n for n in names if not LEGACY_NAMES.fullmatch(n)]


def _legacy_manifest(file: Path) -> bool:
    try:
        doc = json.loads(file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in LEGACY_MANIFESTS[file.name])


def check_replaceable(path: str | Path, what: str = "--out") -> None:
    """Refuse, before any work, to replace a folder holding anything faceedit did not write.

    OutputExists names the folder and up to five of the foreign entries, and says what to do."""
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputExists(
            f"{what} {path}: holds files faceedit did not write ({shown}); writing there would replace "
            "them. Choose a new or empty folder, or pass --overwrite to replace it with everything in it")


def claim_dir(path: str | Path) -> None:
    """The user chose to replace `path` (--overwrite): mark it as faceedit's, so atomic_dir may."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        _write_marker(path, sorted(os.listdir(path)))


def _write_marker(folder: Path, entries: list[str]) -> None:
    atomic_write_text(folder / MARKER, json.dumps({"written_by": "faceedit", "entries": entries}) + "\n")


def _marked(folder: Path) -> set[str]:
    try:
        return set(json.loads((folder / MARKER).read_text()).get("entries", []))
    except (ValueError, AttributeError, OSError):
        return set()


def check_files_writable(folder: str | Path, names: list[str], what: str = "--out") -> None:
    """For a command that adds files to a folder (not replacing it): refuse, before any work, when
    any of `names` exists in `folder` and faceedit's marker there does not list it (a user's file).

    OutputExists names the folder and up to five of those files, and says what to do."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExists(f"{what} {folder}: is a file, expected a folder")
    ours = _marked(folder)
    theirs = [n for n in names if n not in ours and ((folder / n).exists() or (folder / n).is_symlink())]
    if theirs:
        shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise OutputExists(
            f"{what} {folder}: holds files faceedit did not write with the names it would write ({shown}); "
            "writing there would replace them. Choose another folder, rename them, or pass --overwrite "
            "to replace them (other files in the folder are left alone)")


def record_written(folder: str | Path, names: list[str]) -> None:
    """Add `names` to `folder`'s marker: files faceedit wrote there, so a later run may replace them."""
    folder = Path(folder)
    _write_marker(folder, sorted(_marked(folder) | set(names)))


def clean_stale(path: Path) -> list[Path]:
    """Remove the temporary folders earlier, interrupted atomic_dir calls left beside `path`: those
    whose owner process is gone (or, without an owner record, untouched for STALE_S). -> removed."""
    removed = []
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:(\d+)-)?[\w]+\.tmp|"
                         + re.escape(f".{path.name}.old-") + r"(\d+)")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = pattern.fullmatch(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        pid = m.group(1) or m.group(2)
        if pid is not None:
            stale = not _alive(int(pid))
        else:
            stale = time.time() - p.stat().st_mtime > STALE_S
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path`, on error it is removed.

    A reader never sees a half-written folder at `path`: either the old one or the complete new one.
    An existing `path` is replaced only when everything in it is faceedit's (`foreign_entries`;
    `claim_dir` marks a folder the user chose to replace), else OutputExists, before any work.
    The new folder carries a marker listing its entries. Temporary folders an interrupted earlier
    call left behind are removed first (`clean_stale`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    check_replaceable(path, "output folder")
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it a normal folder's mode
    try:
        yield tmp
        _write_marker(tmp, sorted(os.listdir(tmp)))
        if path.exists():
            check_replaceable(path, "output folder")  # again: a user may have added a file meanwhile
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
