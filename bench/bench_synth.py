"""Benchmark: synthetic faces rendered per second by `faceedit.synth.render_dataset`.

Renders `--n` faces (with JPEG encoding and file writes, i.e. the whole `faceedit synth` job) into
a temporary folder with all cores (or `--workers`), and times one face in-process (draw only, and
draw + JPEG encode) for a per-core figure. Prints one JSON object. The goal is >= 500 faces/s on
2 cores. On a shared machine the wall-clock figure depends on what else runs, so the CPU seconds
the render took (this process and its workers) are reported too: `faces_per_cpu_s` times the core
count is what the cores would give if nothing else ran.

    .venv/bin/python bench/bench_synth.py --n 4000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from faceedit import synth


def _per_face_ms(count: int) -> dict[str, float]:
    labels = synth.sample_labels(count, seed=123)
    t0 = time.perf_counter()
    images = [synth.render_face(row, synth.face_rng(123, i)) for i, row in enumerate(labels)]
    t1 = time.perf_counter()
    for img in images:
        img.save(io.BytesIO(), "JPEG", quality=synth.JPEG_QUALITY)
    t2 = time.perf_counter()
    return {"draw_ms": 1e3 * (t1 - t0) / count, "jpeg_ms": 1e3 * (t2 - t1) / count}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="faces to render (default: 4000)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    synth.load_label_table()  # parse the shipped table outside the timed part
    single = _per_face_ms(300)
    with tempfile.TemporaryDirectory(prefix="bench-synth-") as tmp:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        synth.render_dataset(Path(tmp) / "faces", args.n, seed=0, workers=workers)
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    print(json.dumps({
        "benchmark": "synth", "n": args.n, "workers": workers, "cpu_count": os.cpu_count(),
        "seconds": round(seconds, 3), "faces_per_s": round(args.n / seconds, 1),
        "cpu_seconds": round(cpu, 3), "faces_per_cpu_s": round(args.n / cpu, 1),
        "faces_per_s_if_cores_free": round(min(workers, os.cpu_count() or 1) * args.n / cpu, 1),
        "one_core_draw_ms": round(single["draw_ms"], 3), "one_core_jpeg_ms": round(single["jpeg_ms"], 3),
        "load_avg_1min": round(os.getloadavg()[0], 2), "machine": platform.machine(),
    }, indent=2))


if __name__ == "__main__":
    main()
