"""The parts of workers/train.py that need no Ray: placement of workers on nodes, run names,
checkpoint files."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from faceedit.model import VAEConfig
from faceedit.trainer import TrainConfig
from workers.train import (RayConfig, default_run_name, load_state, local_object_store_bytes,
                           plan_placement, save_state)


def test_two_workers_on_two_cores_take_one_core_each():
    p = plan_placement([{"CPU": 2}], workers=2, gpu="auto")
    assert (p.use_gpu, p.cpus_per_worker) == (False, 1)
    assert plan_placement([{"CPU": 16}], workers=2, gpu="auto").cpus_per_worker == 8
    assert plan_placement([{"CPU": 2}], workers=1, gpu="no").cpus_per_worker == 2


def test_cpus_per_worker_fit_every_node():
    # 3 workers on nodes of 8 and 8 CPUs: 5 each would leave the third without a node.
    assert plan_placement([{"CPU": 8}, {"CPU": 8}], workers=3, gpu="no").cpus_per_worker == 4
    # a CPU-less head (docker-compose) does not count
    assert plan_placement([{"CPU": 0}, {"CPU": 4}], workers=2, gpu="no").cpus_per_worker == 2
    assert plan_placement([{"CPU": 4}], workers=2, gpu="no", cpus_per_worker=1).cpus_per_worker == 1


def test_gpu_auto_puts_one_worker_on_each_gpu_never_cpu_workers_beside_idle_gpus():
    nodes = [{"CPU": 8, "GPU": 2}, {"CPU": 0}]
    assert plan_placement(nodes, workers=2, gpu="auto").use_gpu
    assert plan_placement(nodes, workers=2, gpu="auto").cpus_per_worker == 4
    three = plan_placement(nodes, workers=3, gpu="auto")  # 3 asked, 2 GPUs: 2 GPU workers
    assert (three.workers, three.use_gpu) == (2, True) and "3 asked for" in three.note
    one_gpu = plan_placement([{"CPU": 16, "GPU": 1}], workers=None, gpu="auto")
    assert (one_gpu.workers, one_gpu.use_gpu, one_gpu.cpus_per_worker) == (1, True, 16)
    assert plan_placement([{"CPU": 16, "GPU": 1}], workers=2, gpu="auto").workers == 1
    cpu = plan_placement([{"CPU": 2}], workers=None, gpu="auto")  # no GPU: the 2 CPU workers
    assert (cpu.workers, cpu.use_gpu) == (2, False)
    assert plan_placement([{"CPU": 8, "GPU": 4}], workers=None, gpu="auto").workers == 4
    assert not plan_placement(nodes, workers=2, gpu="no").use_gpu
    assert plan_placement(nodes, workers=None, gpu="no").workers == 2
    # GPU workers are limited by GPUs per node, not only by CPUs
    assert plan_placement([{"CPU": 16, "GPU": 1}, {"CPU": 2, "GPU": 1}], workers=2,
                          gpu="yes").cpus_per_worker == 2


def test_impossible_placements_are_clear_errors():
    with pytest.raises(ValueError, match="need 2 GPUs, the cluster has 0"):
        plan_placement([{"CPU": 4}], workers=2, gpu="yes")
    with pytest.raises(ValueError, match="do not fit"):
        plan_placement([{"CPU": 1}], workers=2, gpu="no")
    with pytest.raises(ValueError, match="workers=0"):
        plan_placement([{"CPU": 1}], workers=0, gpu="no")
    with pytest.raises(ValueError, match="gpu"):
        RayConfig(gpu="maybe")


def test_default_run_name_resumes_the_same_command_only(tmp_path):
    model, train = VAEConfig(), TrainConfig()
    name = default_run_name(tmp_path / "vae", "sha256:x", model, train, 2)
    assert name.startswith("vae-") and name == default_run_name(tmp_path / "vae", "sha256:x", model, train, 2)
    assert name != default_run_name(tmp_path / "vae", "sha256:y", model, train, 2)
    assert name != default_run_name(tmp_path / "vae", "sha256:x", model, dataclasses.replace(train, lr=1e-3), 2)
    assert name != default_run_name(tmp_path / "vae", "sha256:x", model, train, 4)


def test_checkpoint_state_round_trips_without_pickle(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7, "epoch": 1,
             "rng": {"torch": torch.get_rng_state()}, "history": [{"step": 7, "val": 1.5}]}
    save_state(state, tmp_path)
    back = load_state(tmp_path)
    assert back["step"] == 7 and back["history"] == state["history"]
    assert torch.equal(back["model"]["weight"], model.weight.detach())
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    with pytest.raises(FileNotFoundError, match="state.pt"):
        load_state(tmp_path / "nothing")


def test_local_object_store_is_modest():
    assert 80 * 2**20 <= local_object_store_bytes() <= 512 * 2**20
