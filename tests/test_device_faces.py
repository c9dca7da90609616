"""scripts/device_faces.py: a cache packed into parts under a size limit comes back as the same
cache (lossless) or a close one (lossy), and a missing or damaged part is named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from faceedit.cache import Cache, to_float
from faceedit.files import OutputExists
from faceedit.metrics import psnr
from test_trainer import make_cache

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_faces.py"


def _script():
    spec = importlib.util.spec_from_file_location("device_faces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    return Cache.open(make_cache(root / "cache", n=80, size=32, val=16))


def test_lossless_parts_give_back_the_same_cache(source, tmp_path):
    faces = _script()
    plan = faces.pack(source.root, tmp_path / "packed", ["train", "val", "test"], None, part_mib=0.006)
    assert len(plan["parts"]) > 1  # 6 KiB per part: several
    assert all(p["bytes"] <= 0.006 * 2**20 for p in plan["parts"])
    back = Cache.open(faces.unpack(tmp_path / "packed", tmp_path / "back"))
    assert np.array_equal(back.images, source.images)
    assert np.array_equal(back.labels, source.labels) and np.array_equal(back.split, source.split)
    assert back.names == source.names
    faces.unpack(tmp_path / "packed", tmp_path / "back")  # its own earlier output: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file")
    with pytest.raises(OutputExists, match="mine"):
        faces.unpack(tmp_path / "packed", mine)
    assert (mine / "notes.txt").read_text() == "a user's file"


def test_lossy_train_and_val_only(source, tmp_path):
    faces = _script()
    faces.pack(source.root, tmp_path / "packed", ["train", "val"], 95, part_mib=56)
    back = Cache.open(faces.unpack(tmp_path / "packed", tmp_path / "back"))
    rows = np.flatnonzero(source.split != 2)
    assert np.array_equal(back.split, source.split[rows])
    assert len(back.indices("val")) == len(source.indices("val"))
    assert float(psnr(to_float(back.images), to_float(source.images[rows])).mean()) > 30


def test_a_missing_or_damaged_part_is_named(source, tmp_path):
    faces = _script()
    plan = faces.pack(source.root, tmp_path / "packed", ["train"], None, part_mib=0.006)
    second = tmp_path / "packed" / plan["parts"][1]["name"]
    data = second.read_bytes()
    second.write_bytes(data[:-10])
    with pytest.raises(ValueError, match=plan["parts"][1]["name"]):
        faces.unpack(tmp_path / "packed", tmp_path / "back")
    second.unlink()
    with pytest.raises(FileNotFoundError, match=plan["parts"][1]["name"]):
        faces.unpack(tmp_path / "packed", tmp_path / "back")
    assert not (tmp_path / "back").exists()
