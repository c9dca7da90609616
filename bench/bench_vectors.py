"""Balanced vectors: exact per-cell weights (one streaming pass) vs literal replication-resampling.

Prints JSON: for each scenario, seconds and peak traced memory (tracemalloc: numpy reports its
allocations to it) of
  - weighted: CellStats fed in batches of 512 rows + Balancing.vector() (faceedit/vectors.py);
  - literal:  replicated_vector, which copies every cell up to the largest (White 2016);
and the largest difference between the two vectors, the replication factors and Kish's ESS.
Latents are random N(0, 1) (D = 128); the labels are CelebA's own rows (../shared/data/celeba):

  smiling_160k     real rows resampled to N = 160,000 (CelebA's train size); Smiling balanced over
                   Male and Mouth_Slightly_Open (White's set)
  bald_real_19k    the 19,000 real rows; Bald over Male: one bald woman, copied ~11,000 times
  bald_160k        Bald x Male cell counts scaled to N = 160,000, the bald-woman cell kept at 1 face

Also the time of one streaming pass that accumulates the cells of all 40 attributes at once.
Usage: python bench/bench_vectors.py [--celeba DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

from faceedit import vectors as V
from faceedit.attributes import ATTRIBUTES, attribute_index

REPO = Path(__file__).resolve().parents[1]
D, N_FULL, BATCH = 128, 160_000, 512


def read_labels(celeba: Path) -> np.ndarray:
    """list_attr_celeba.txt -> (N, 40) int8 in {0, 1} (trusting the rows, not the count line)."""
    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()[2:]
    rows = [line.split()[1:] for line in lines if line.strip()]
    return (np.asarray(rows, dtype=np.int8) > 0).astype(np.int8)


def labels_with_counts(counts: list[int], names: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    blocks = []
    for c, n in enumerate(counts):
        block = np.zeros((n, len(ATTRIBUTES)), np.int8)
        for j, name in enumerate(names):
            block[:, attribute_index(name)] = (c >> j) & 1
        blocks.append(block)
    return np.concatenate(blocks)[rng.permutation(sum(counts))]


def measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round(seconds, 4), round(peak / 2**20, 1)


def scenario(mu: np.ndarray, labels: np.ndarray, attr: str) -> dict:
    conf = V.default_confounders(attr)

    def weighted():
        stats = V.CellStats({attr: conf}, D)
        for i in range(0, len(mu), BATCH):
            stats.update(mu[i:i + BATCH], labels[i:i + BATCH])
        return V.balancing(stats.cells(attr))

    def literal():
        return V.replicated_vector(mu, labels, attr, max_bytes=16 << 30)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", V.TinyCellWarning)
        bal, w_s, w_mb = measure(weighted)
        lit, l_s, l_mb = measure(literal)
    vec = bal.vector()
    return {
        "attribute": attr, "confounders": list(conf), "N": len(mu), "D": D,
        "cells": {bal.cells.label(c): int(n) for c, n in enumerate(bal.cells.counts)},
        "max_replication_factor": round(float(bal.factors.max()), 1),
        "rows_after_replication": int(bal.kept.sum() * bal.cells.counts[bal.kept].max()),
        "ess": {k: round(v, 1) for k, v in bal.ess.items()},
        "weighted": {"seconds": w_s, "peak_mib": w_mb},
        "literal": {"seconds": l_s, "peak_mib": l_mb},
        "max_abs_difference": float(np.abs(lit - vec).max()),
        "vector_norm": round(float(np.linalg.norm(vec)), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--celeba", type=Path, default=REPO.parent / "shared" / "data" / "celeba")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if not (args.celeba / "list_attr_celeba.txt").is_file():
        print(f"bench_vectors: no CelebA labels at {args.celeba} (pass --celeba)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    real = read_labels(args.celeba)
    results = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "processor": platform.processor() or platform.machine()}}

    big = real[rng.integers(0, len(real), N_FULL)]
    mu = rng.normal(size=(N_FULL, D)).astype(np.float32)
    results["smiling_160k"] = scenario(mu, big, "Smiling")

    results["bald_real_19k"] = scenario(mu[: len(real)], real, "Bald")

    counts = np.bincount(V.cell_ids(real, ("Bald", "Male")), minlength=4)
    scaled = [1 if n == 1 else int(round(n * N_FULL / len(real))) for n in counts]
    bald = labels_with_counts(scaled, ("Bald", "Male"), rng)
    results["bald_160k"] = scenario(rng.normal(size=(len(bald), D)).astype(np.float32), bald, "Bald")

    def all_attributes():
        stats = V.CellStats({a: V.default_confounders(a) for a in ATTRIBUTES}, D)
        for i in range(0, N_FULL, BATCH):
            stats.update(mu[i:i + BATCH], big[i:i + BATCH])
        return stats

    _, s, mb = measure(all_attributes)
    results["all_40_attributes_one_pass_160k"] = {"seconds": s, "peak_mib": mb}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        from faceedit.files import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
