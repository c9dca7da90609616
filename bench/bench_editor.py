"""Editor latency: an edit (decode only) in the library, and the full API round trip via gradio_client.

    .venv/bin/python bench/bench_editor.py [--bundle B --bank K] [--edits 200] [--threads 1 2]

The round trip is measured against `faceedit serve` in its own process (as a user runs it): one
client editing in sequence, then `--clients` clients at once, 10 edits each.

Uses runs/bundle-real64 + runs/bank-real64 when they exist (or --bundle/--bank), else builds a tiny
untrained model and bank in a temporary folder, and says which in the JSON ("model"). Prints one
JSON object: milliseconds p50/p95 per measurement, the machine's core count and torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceedit.editor import Editor  # noqa: E402

REAL_BUNDLE, REAL_BANK = REPO / "runs" / "bundle-real64", REPO / "runs" / "bank-real64"
PHOTOS = REPO.parent / "shared" / "data" / "real_faces"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    p95 = ms[max(0, int(0.95 * len(ms)) - 1)]
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(p95, 2), "n": len(ms)}


def tiny_model(root: Path) -> tuple[Path, Path]:
    """An untrained 64 px VAE of the default config and its bank, on a small random cache."""
    from faceedit.bank import BankConfig, build_bank
    from faceedit.bundle import save_bundle
    from faceedit.cache import Cache, write_arrays
    from faceedit.attributes import ATTRIBUTES
    from faceedit.model import VAE, VAEConfig

    rng = np.random.default_rng(0)
    n, size = 256, 64
    images = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    labels = (rng.random((n, len(ATTRIBUTES))) < 0.5).astype(np.int8)
    cache = Cache.open(write_arrays(root / "cache", images, labels, "bench", val=n // 4))
    torch.manual_seed(0)
    model = VAE(VAEConfig()).eval()
    bundle = save_bundle(root / "bundle", model, {"cache": cache.hash})
    bank = build_bank(model, cache, BankConfig(), progress=False).save(root / "bank")
    return bundle, bank


def strengths_sequence(k: int, rng: np.random.Generator) -> list[dict[str, float]]:
    names = ("Smiling", "Male", "Eyeglasses", "Young", "Blond_Hair")
    return [{n: float(np.round(rng.uniform(-3, 3), 1)) for n in rng.choice(names, 2, replace=False)}
            for _ in range(k)]


def bench_library(editor: Editor, z: torch.Tensor, edits: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    seq = strengths_sequence(edits, np.random.default_rng(0))
    for s in seq[:10]:  # warm-up
        editor.edit(z, s, "balanced")
    times = []
    for s in seq:
        start = time.perf_counter()
        editor.edit(z, s, "balanced")
        times.append(time.perf_counter() - start)
    return percentiles(times)


def serve(bundle: Path, bank: Path) -> tuple[subprocess.Popen, str]:
    """`faceedit serve` in its own process (so client threads here do not share its GIL) -> URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "faceedit.cli", "serve", "--bundle", str(bundle), "--bank", str(bank),
           "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"{' '.join(cmd)} did not answer within 120 s")


def client_session(url: str, photo: Path | None, edits: int, seed: int) -> list[float]:
    """One user: encode once, then `edits` edits; seconds per edit (including fetching the PNG)."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    if photo is not None:
        client.predict(handle_file(str(photo)), api_name="/encode")
    else:
        client.predict(seed, api_name="/sample")
    times = []
    for s in strengths_sequence(edits, np.random.default_rng(seed)):
        start = time.perf_counter()
        client.predict(s, "balanced", False, api_name="/edit")
        times.append(time.perf_counter() - start)
    return times


def bench_api(url: str, photo: Path | None, edits: int, clients: int) -> dict:
    client_session(url, photo, 5, 99)  # warm-up
    one = client_session(url, photo, edits, 0)
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        many = [t for r in pool.map(lambda i: client_session(url, photo, 10, i), range(clients)) for t in r]
        wall = time.perf_counter() - start
    return {"one_client": percentiles(one),
            f"{clients}_clients_x_10_edits": dict(percentiles(many), wall_s=round(wall, 1))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--bank", type=Path, default=None)
    p.add_argument("--edits", type=int, default=200)
    p.add_argument("--api-edits", type=int, default=100)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--clients", type=int, default=20, help="concurrent clients of the load measurement")
    args = p.parse_args()

    tmp = None
    if args.bundle and args.bank:
        bundle, bank, which = args.bundle, args.bank, f"given: {args.bundle}"
    elif REAL_BUNDLE.is_dir() and REAL_BANK.is_dir():
        bundle, bank, which = REAL_BUNDLE, REAL_BANK, f"real: {REAL_BUNDLE}"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-editor-")
        bundle, bank = tiny_model(Path(tmp.name))
        which = "untrained VAEConfig() (64 px, D=128) with a bank on random data (no real bundle found)"
    editor = Editor.load(bundle, bank, threads=args.threads[0])
    photos = sorted(PHOTOS.glob("*.jpg"))
    photo = photos[0] if photos else None
    z = editor.encode(photo).z if photo else editor.sample(0)[0]
    cfg = editor.model.config
    result = {
        "model": which, "image_size": cfg.image_size, "latent_dim": cfg.latent_dim,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
        "photo": str(photo) if photo else "prior sample",
        "edit_decode_only": {f"threads={t}": bench_library(editor, z, args.edits, t) for t in args.threads},
    }
    proc, url = serve(bundle, bank)
    try:
        result["api_round_trip"] = bench_api(url, photo, args.api_edits, args.clients)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
