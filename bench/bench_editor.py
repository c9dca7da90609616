"""Editor latency: an edit (decode only) in the library, and the full API round trip via gradio_client.

    .venv/bin/python bench/bench_editor.py [--bundle B --bank K] [--edits 200] [--threads 1 2]
        [--api-edits 50] [--clients 20] [--baseline OLD_CHECKOUT --rounds 2] [--api-only]

The round trip is measured against `faceedit serve` in its own process (as a user runs it), on
127.0.0.1: one client editing in sequence, then `--clients` clients at once, `--api-edits` edits
each; an edit's time runs until the edited image's bytes are in hand (inline, or fetched from its
file URL as a browser does). With --baseline, an older checkout's server is measured the same way,
alternating with this tree's, and the ratios old/new come from the same run.

Uses runs/bundle-real64 + runs/bank-real64 when they exist (or --bundle/--bank), else builds a tiny
untrained model and bank in a temporary folder, and says which in the JSON ("model"). Prints one
JSON object: milliseconds p50/p95 and errors per measurement, the machine's core count and load.
"""

from __future__ import annotations

import argparse
import base64
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
from typing import Any

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


def serve(bundle: Path, bank: Path, tree: Path = REPO) -> tuple[subprocess.Popen, str]:
    """`faceedit serve` of the code in `tree`, in its own process (so client threads here do not
    share its GIL), on 127.0.0.1 at a free port -> (process, URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "faceedit.cli", "serve", "--bundle", str(bundle), "--bank", str(bank),
           "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def image_bytes(value: Any, url: str) -> bytes:
    """The bytes of an image output as the page gets them: inline (a data URL) or one more request
    for its file URL (what a browser does with an <img src>)."""
    link = value.get("url") if isinstance(value, dict) else None
    if not link:
        raise RuntimeError(f"no image in the answer: {value!r}")
    if link.startswith("data:"):
        return base64.b64decode(link.split(",", 1)[1])
    with urllib.request.urlopen(link if "://" in link else url.rstrip("/") + "/" + link.lstrip("/"),
                                timeout=60) as r:
        return r.read()


class PageClient:
    """One browser tab's edits, sent as the page's own JavaScript sends them: an event the app marks
    queue=False is one POST to /gradio_api/run/<name>; a queued one joins the queue and reads the
    answer from the session's event stream. (gradio_client polls its answers every 50 ms, which
    would hide the server's own latency.) The face is set up through gradio_client, in the same
    session."""

    def __init__(self, url: str):
        import json as _json
        import uuid as _uuid

        self.url, self.json = url.rstrip("/"), _json
        self.session = _uuid.uuid4().hex
        config = _json.loads(urllib.request.urlopen(self.url + "/config", timeout=60).read())
        deps = config["dependencies"]
        self.edit = next(d for d in deps if d.get("api_name") == "edit")
        self.queued = self.edit.get("queue") is not False and config.get("enable_queue", True)
        kinds = {c["id"]: c["type"] for c in config["components"]}
        self.inputs = [kinds[i] for i in self.edit["inputs"]]  # state inputs travel as null
        host, port = self.url.split("//", 1)[1].split(":")
        import http.client

        self.conn = http.client.HTTPConnection(host, int(port), timeout=120)

    def face(self, photo: Path | None, seed: int) -> None:
        from gradio_client import Client, handle_file

        client = Client(self.url + "/", verbose=False, download_files=False)
        client.session_hash = self.session
        if photo is not None:
            client.predict(handle_file(str(photo)), api_name="/encode")
        else:
            client.predict(seed, api_name="/sample")

    def _post(self, path: str, body: dict) -> dict:
        self.conn.request("POST", path, self.json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status} {data[:200]!r}")
        return self.json.loads(data)

    def edit_once(self, strengths: dict[str, float]) -> Any:
        """-> the first output (the edited face) as the page receives it."""
        values = iter([strengths, "balanced", False])
        data = [None if kind == "state" else next(values) for kind in self.inputs]
        body = {"data": data, "fn_index": self.edit["id"],
                "session_hash": self.session, "event_data": None, "trigger_id": None}
        if not self.queued:
            return self._post("/gradio_api/run/edit", body)["data"][0]
        event = self._post("/gradio_api/queue/join", body)["event_id"]
        stream = urllib.request.urlopen(f"{self.url}/gradio_api/queue/data?session_hash={self.session}",
                                        timeout=120)
        try:
            for line in stream:
                if not line.startswith(b"data:"):
                    continue
                msg = self.json.loads(line[5:])
                if msg.get("event_id") == event and msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError(f"edit failed: {msg.get('output')}")
                    return msg["output"]["data"][0]
        finally:
            stream.close()
        raise RuntimeError("the event stream ended without the answer")


def client_session(url: str, photo: Path | None, edits: int, seed: int) -> tuple[list[float], int]:
    """One user: a face (the photo, or a prior sample), then `edits` edits -> (seconds per edit,
    until the edited image's bytes are in hand; errors)."""
    page = PageClient(url)
    page.face(photo, seed)
    times, errors = [], 0
    for s in strengths_sequence(edits, np.random.default_rng(seed)):
        start = time.perf_counter()
        try:
            image_bytes(page.edit_once(s), url)
        except Exception:  # counted: the figure is errors, not a crash of the bench
            errors += 1
            continue
        times.append(time.perf_counter() - start)
    return times, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), which contention does not inflate as much
    as wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_api(url: str, photo: Path | None, edits: int, clients: int, pid: int) -> dict:
    client_session(url, photo, 5, 99)  # warm-up
    one, one_errors = client_session(url, photo, edits, 0)
    cpu = cpu_seconds(pid)
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        runs = list(pool.map(lambda i: client_session(url, photo, edits, i), range(clients)))
        wall = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu
    many = [t for times, _ in runs for t in times]
    errors = sum(e for _, e in runs)
    return {"one_client": dict(percentiles(one), errors=one_errors),
            f"{clients}_clients_x_{edits}_edits": dict(
                percentiles(many), errors=errors, wall_s=round(wall, 1), edits_per_s=round(len(many) / wall, 1),
                server_cpu_ms_per_edit=round(1e3 * cpu / max(1, len(many)), 1))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=None)
    p.add_argument("--bank", type=Path, default=None)
    p.add_argument("--edits", type=int, default=200)
    p.add_argument("--api-edits", type=int, default=50, help="edits per client, one client and each "
                   "of the --clients (default: 50)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--clients", type=int, default=20, help="concurrent clients of the load measurement")
    p.add_argument("--api-only", action="store_true", help="skip the library (decode-only) figures")
    p.add_argument("--baseline", type=Path, default=None, help="a checkout of older code (e.g. `git "
                   "worktree add --detach /tmp/base 9c096b7`): its server is measured the same way, "
                   "alternately with this tree's, and the ratios are reported")
    p.add_argument("--rounds", type=int, default=1, help="alternations of baseline and this tree")
    p.add_argument("--photo", type=Path, default=None, help="the photo each client uploads (default: "
                   "the first of ../shared/data/real_faces, else a prior sample: no photo)")
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
    photo = args.photo or (photos[0] if photos else None)
    z = editor.encode(photo).z if photo else editor.sample(0)[0]
    cfg = editor.model.config
    result = {
        "model": which, "image_size": cfg.image_size, "latent_dim": cfg.latent_dim,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
        "photo": str(photo) if photo else "prior sample",
    }
    if not args.api_only:
        result["edit_decode_only"] = {f"threads={t}": bench_library(editor, z, args.edits, t)
                                      for t in args.threads}
    trees = {"this": REPO} if args.baseline is None else {"baseline": args.baseline, "this": REPO}
    rounds: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            proc, url = serve(bundle, bank, tree)
            try:
                rounds[name].append(bench_api(url, photo, args.api_edits, args.clients, proc.pid))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    result["api_round_trip"] = {name: runs if len(runs) > 1 else runs[0] for name, runs in rounds.items()}
    if args.baseline is not None:
        key = f"{args.clients}_clients_x_{args.api_edits}_edits"
        ratio = lambda part, stat: round(statistics.median(r[part][stat] for r in rounds["baseline"])
                                         / statistics.median(r[part][stat] for r in rounds["this"]), 2)
        result["baseline_over_this"] = {"one_client_p50": ratio("one_client", "p50_ms"),
                                        "load_p50": ratio(key, "p50_ms"), "load_p95": ratio(key, "p95_ms"),
                                        "server_cpu_per_edit": ratio(key, "server_cpu_ms_per_edit")}
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
