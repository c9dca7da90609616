"""Connecting to Ray, the one way every entry point under workers/ does it.

`ray_session` joins the cluster at an address (or $RAY_ADDRESS), or else starts a local Ray just for
this run: no dashboard, listening on 127.0.0.1 only, a modest object store. On leaving it
disconnects what it connected (a Ray it started stops; a joined cluster keeps running). Inside a
session that is already connected it does nothing, so callers nest freely.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

MIN_OBJECT_STORE = 80 * 2**20  # Ray refuses less than 75 MiB
MAX_OBJECT_STORE = 512 * 2**20


def local_object_store_bytes() -> int:
    """A modest object store for a local Ray: 5% of RAM, between 80 and 512 MiB."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(max(ram // 20, MIN_OBJECT_STORE), MAX_OBJECT_STORE))


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make a local Ray listen on 127.0.0.1 only.

    Ray takes the machine's network address as the node's, even for an explicit 127.0.0.1, unless
    its switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (named for Windows/macOS, where loopback is the
    default) is 0. Ray reads that variable once, when `ray` is first imported, into
    ray._private.ray_constants.ENABLE_RAY_CLUSTER: the driver's copy is switched here, and the
    variable itself for the processes the local Ray starts (they import ray afresh). Both are
    restored afterwards. tests/test_ray_train.py checks every listening socket of the local Ray.
    """
    from ray._private import ray_constants

    key = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_flag = os.environ.get(key), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[key], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old_env


def connect(address: str = "", num_cpus: int = 0, object_store_bytes: int = 0) -> bool:
    """Join the cluster at `address` (else $RAY_ADDRESS), or start a local Ray on 127.0.0.1 with
    `num_cpus` CPUs (0: all cores) and an object store of `object_store_bytes` (0:
    `local_object_store_bytes()`). True when this call connected (ray.shutdown() then disconnects,
    and stops a Ray it started); False when the process was already connected."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")
    # Errors only from Ray's own loggers in this job's processes: without a dashboard the state
    # API is absent and Ray Train's placement-group watchdog would warn about it every few
    # seconds; our progress lines go to stdout, not through logging.
    quiet = ray.LoggingConfig(encoding="TEXT", log_level="ERROR")
    if address:
        ray.init(address=address, logging_config=quiet)
        return True
    with loopback_only():
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=object_store_bytes or local_object_store_bytes(),
                 logging_config=quiet)
    return True


@contextlib.contextmanager
def ray_session(address: str = "", num_cpus: int = 0, object_store_bytes: int = 0) -> Iterator[None]:
    """`connect` for the duration of a `with` block; ray.shutdown() in finally when it connected."""
    import ray

    started = connect(address, num_cpus, object_store_bytes)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
