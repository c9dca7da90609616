"""bench/bench_faces.py: nested subsets of the train split, the val split untouched, and a smoke run
on a tiny cache (PCA and the VAE scored on every val face, the finished points written out)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from faceedit.cache import Cache
from test_trainer import make_cache

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "bench_faces.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_faces", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_subsets_are_nested_and_leave_the_val_split_alone(tmp_path):
    cache = Cache.open(make_cache(tmp_path / "cache", n=64, val=16))
    subset = _bench().subset
    small, large = subset(cache, 10, seed=3), subset(cache, 30, seed=3)
    small_rows, large_rows = small.indices("train"), large.indices("train")
    assert len(small_rows) == 10 and len(large_rows) == 30
    assert set(small_rows) <= set(large_rows) <= set(cache.indices("train"))
    assert np.array_equal(small.indices("val"), cache.indices("val"))
    assert np.array_equal(cache.split, Cache.open(cache.root).split)  # the cache itself unchanged
    assert not np.array_equal(subset(cache, 10, seed=4).indices("train"), small_rows)


def test_bench_faces_smoke(tmp_path):
    cache = make_cache(tmp_path / "cache", n=96, val=16)
    out = tmp_path / "faces.json"
    cmd = [sys.executable, str(SCRIPT), "--cache", str(cache), "--faces", "40", "0", "--images", "160",
           "--batch", "8", "--validations", "2", "--threads", "1", "--channels", "8", "16", "--latent-dim", "8", "--out", str(out),
           "--plot", str(tmp_path / "faces.png")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = json.loads(out.read_text())["points"]
    assert (tmp_path / "faces.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p["train_faces"] for p in points] == [40, 80]
    for p in points:
        assert p["val_faces"] == 16 and p["images_seen"] >= 160
        assert 5 < p["pca_psnr"] < 60 and 5 < p["vae_psnr"] < 60
        assert p["vae_psnr"] >= max(v for _, v in p["val_curve"]) - 0.5  # the best weights were kept
