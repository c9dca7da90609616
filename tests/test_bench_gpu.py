"""bench/bench_gpu.py runs on the CPU at small sizes (the smoke CI can run): both loops measured,
their ratio printed, one JSON line per measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_gpu_smoke_on_cpu():
    cmd = [sys.executable, str(REPO / "bench" / "bench_gpu.py"), "--device", "cpu", "--models",
           "default", "--batches", "8", "--size", "16", "--images", "64", "--window", "2",
           "--windows", "3", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    loops = {r["loop"]: r for r in rows if "loop" in r}
    assert set(loops) == {"project", "bare"}
    assert all(r["images_per_s"] > 0 and r["batch"] == 8 for r in loops.values())
    assert loops["project"]["windows"] >= 2  # the warm-up window dropped, the rest measured
    table = proc.stderr.split("x bare", 1)[1]
    assert "project/auto" in table and "bare" in table
