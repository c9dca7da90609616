"""GPU placement on a real Ray cluster that declares a GPU (`ray start --num-gpus 1` on this CPU
machine): the main job's plan is one GPU worker (never CPU workers beside the idle GPU), Ray Train
gets use_gpu, one GPU per worker and NCCL, and Ray schedules a task of that shape onto the GPU. Only
the processes this test started are stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_ray_support import LoopbackCluster

DRIVER = """
import json, os, sys
import ray
from workers.train import plan_placement, scaling

ray.init(address=sys.argv[1], logging_config=ray.LoggingConfig(encoding="TEXT", log_level="ERROR"))
try:
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    out = {}
    for asked in (None, 2):
        p = plan_placement(nodes, asked, "auto")
        sc, tc = scaling(p)
        out[str(asked)] = {"workers": p.workers, "use_gpu": p.use_gpu, "cpus": p.cpus_per_worker,
                           "note": p.note, "scaling_use_gpu": sc.use_gpu,
                           "scaling_workers": sc.num_workers,
                           "resources": sc.resources_per_worker, "backend": tc.backend}

    @ray.remote(num_cpus=p.cpus_per_worker, num_gpus=1)
    def where():
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    ids, visible = ray.get(where.remote(), timeout=120)
    out["task"] = {"gpu_ids": [str(i) for i in ids], "visible": visible}
    print("RESULT " + json.dumps(out))
finally:
    ray.shutdown()
"""


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-gpu")
    c = LoopbackCluster(Path(tmp_path_factory.getbasetemp()) / "rg")
    try:
        c.start_node(2, {}, tmp / "head.log", gpus=1)
        yield c
    finally:
        c.stop()


@pytest.mark.slow  # a Ray node start: 15-40 s on the shared 2-core machine
def test_one_declared_gpu_gets_one_gpu_worker_with_nccl(gpu_cluster):
    proc = subprocess.run([sys.executable, "-c", DRIVER, gpu_cluster.address], env=gpu_cluster.env,
                          capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    auto, two = out["None"], out["2"]
    assert (auto["workers"], auto["use_gpu"], auto["cpus"]) == (1, True, 2)
    assert (auto["scaling_use_gpu"], auto["scaling_workers"], auto["backend"]) == (True, 1, "nccl")
    assert auto["resources"] == {"CPU": 2, "GPU": 1}
    # the old main job's 2 workers: one GPU worker instead of 2 CPU workers beside the GPU
    assert (two["workers"], two["use_gpu"]) == (1, True) and "2 asked for" in two["note"]
    assert out["task"] == {"gpu_ids": ["0"], "visible": "0"}  # Ray hands the worker the GPU
