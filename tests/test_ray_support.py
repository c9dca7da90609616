"""Helpers of the Ray tests (no tests here): a tiny cache, a tiny model, a loopback Ray cluster
made with `ray start`, and a process-tree killer that stops only the processes a test started."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from faceedit.attributes import ATTRIBUTES
from faceedit.cache import write_arrays

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
FACEEDIT = [sys.executable, "-m", "faceedit.cli"]
# A tiny VAE at 32x32 (diffusers-style test sizes): ~10k parameters, a step in milliseconds.
TINY_MODEL = ["--channels", "8", "16", "--blocks", "0", "--groups", "4", "--latent-dim", "8"]
# Ray Train V2 hands reports to its controller on each health-check tick (2 s by default).
FAST_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
# Written into <storage>/<run name>/ by Ray Train once it has registered a checkpoint.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def write_tiny_cache(root: Path, n: int, val: int, size: int = 32, seed: int = 0) -> Path:
    """A cache in faceedit/cache.py's format: n images (a coloured ellipse on a gradient, which a
    VAE learns quickly), random labels, the last `val` rows in the val split."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        background = rng.uniform(0, 1, (3, 1, 1)) * (0.5 + 0.5 * yy)
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.35)
        face = ((xx - cx) ** 2 + ((yy - cy) / 1.3) ** 2) < r * r
        images[i] = (np.where(face, rng.uniform(0.3, 1, (3, 1, 1)), background) * 255).astype(np.uint8)
    labels = rng.integers(0, 2, (n, len(ATTRIBUTES)))
    return write_arrays(root, images, labels, f"sha256:tiny-{n}-{seed}", val=val, source="tests")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, poll: float = 0.05):
    """predicate()'s first truthy value; AssertionError naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def last_step(metrics_file: Path) -> int:
    """Step of the last entry of a metrics.jsonl (0 while there is none)."""
    try:
        rows = read_jsonl(metrics_file)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return int(rows[-1]["step"]) if rows else 0


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def kill_tree(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM these processes, then SIGKILL those still there after `grace` seconds. Ray's agents
    outlive a killed raylet, so the whole tree is listed before anything is signalled."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while time.monotonic() < end and any(_alive(p) for p in pids):
            time.sleep(0.1)


def listening_addresses(pid: int, names: tuple[str, ...] = ()) -> set[str]:
    """The IP addresses that pid and its descendants (only those whose /proc comm is one of `names`,
    when given) listen on with TCP, from /proc (Linux)."""
    import ipaddress

    inodes = set()
    for p in process_tree(pid):
        try:
            if names and Path(f"/proc/{p}/comm").read_text().strip() not in names:
                continue
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                hexip = cols[1].split(":")[0]  # 32-bit words in host (little-endian) order
                raw = b"".join(bytes.fromhex(hexip[i: i + 8])[::-1] for i in range(0, len(hexip), 8))
                ip = ipaddress.ip_address(raw)
                out.add(str(getattr(ip, "ipv4_mapped", None) or ip))  # ::ffff:127.0.0.1 -> 127.0.0.1
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """A Ray head and more nodes on this machine, each a `ray start --block` process of its own.

    Every process (drivers included) shares a fresh token (Ray's token authentication); `stop`
    ends the process trees of the nodes this object started, never other Ray processes."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = tmp  # Ray's session folder (short: its sockets live there)
        self.env = {**os.environ, **FAST_RAY_ENV, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ADDRESS": ""}
        self.nodes: list[subprocess.Popen] = []
        self.trees: list[int] = []

    def start_node(self, cpus: int, resources: dict[str, float], log: Path, gpus: int = 0) -> None:
        """`gpus` > 0 declares GPUs the machine need not have (Ray schedules by the count)."""
        head = not self.nodes
        cmd = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               f"--num-cpus={cpus}", f"--num-gpus={gpus}", f"--resources={json.dumps(resources)}"]
        cmd += (["--head", f"--port={self.port}", "--include-dashboard=false",
                 f"--temp-dir={self.temp_dir}"] if head else [f"--address={self.address}"])
        node = subprocess.Popen(cmd, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(node)

        def up() -> bool:
            assert node.poll() is None, f"`ray start` exited ({node.returncode}):\n{log.read_text()[-2000:]}"
            return "Ray runtime started" in log.read_text()

        wait_for(up, 90, f"the Ray node of {self.address} (log: {log})", poll=0.2)

    def stop(self) -> None:
        for node in self.nodes:
            self.trees.extend(process_tree(node.pid))
        kill_tree(self.trees, grace=1.0)  # `ray start --block` itself ignores SIGTERM
        for node in self.nodes:
            node.wait(timeout=10)
