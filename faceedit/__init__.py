"""faceedit: edit faces with attribute vectors in a VAE's latent space, and audit the edits."""

import os

# OpenMP threads that spin-wait at the end of every parallel region stall whenever another process
# holds a core (a shared or oversubscribed machine): on busy cores the VAE trains several times
# faster with PASSIVE (bench/bench_train.py; BENCHMARKS.md, Training throughput). It must be set
# before torch loads its OpenMP runtime, hence here; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from faceedit.attributes import ATTRIBUTES, attribute_index  # noqa: E402

__all__ = ["ATTRIBUTES", "attribute_index", "load_bundle"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `faceedit.load_bundle` without importing torch on `import faceedit`.
    if name == "load_bundle":
        from faceedit.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'faceedit' has no attribute {name!r}")
