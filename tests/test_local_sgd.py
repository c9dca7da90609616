"""Local SGD (TrainConfig.sync_every > 1): two gloo processes on 127.0.0.1, each running the loop on
its own shard, averaging the weights every K steps and before every report."""

import socket
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from faceedit.cache import Cache
from faceedit.model import VAE
from faceedit.objective import VAEObjective
from faceedit.trainer import average_weights, fit
from test_trainer import FAST, TINY, make_cache


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, job: str, arg, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        if job == "average":
            torch.manual_seed(rank)
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
            model = model.to(memory_format=torch.channels_last)
            before = {k: v.clone() for k, v in model.state_dict().items()}
            average_weights(model)
            torch.save({"before": before, "after": model.state_dict(),
                        "channels_last": model[0].weight.is_contiguous(
                            memory_format=torch.channels_last)}, f"{out}/rank{rank}.pt")
        elif job == "ddp":  # local SGD under a DDP wrapper would average twice: refused
            try:
                fit(VAE(TINY), VAEObjective(TINY), Cache.open(arg), replace(FAST, sync_every=3),
                    rank=rank, world_size=world, wrap_model=torch.nn.parallel.DistributedDataParallel)
                outcome = "trained"
            except ValueError as e:
                outcome = str(e)
            torch.save({"outcome": outcome}, f"{out}/rank{rank}.pt")
        elif job == "clock":  # DDP under a time budget that ends the run, loss read every 4 steps
            broadcasts = []
            broadcast = dist.broadcast
            dist.broadcast = lambda t, *a, **k: (broadcasts.append(t.numel()), broadcast(t, *a, **k))[1]
            config = replace(FAST, epochs=10_000, max_minutes=0.04, check_every=4, val_every=10_000)
            result = fit(VAE(TINY), VAEObjective(TINY), Cache.open(arg), config, rank=rank,
                         world_size=world, wrap_model=torch.nn.parallel.DistributedDataParallel)
            dist.broadcast = broadcast
            torch.save({"model": result.model.state_dict(), "step": result.step,
                        "broadcasts": len(broadcasts), "history": result.history}, f"{out}/rank{rank}.pt")
        else:
            torch.manual_seed(rank)  # different initial weights: the first average aligns them
            reports = []
            result = fit(VAE(TINY), VAEObjective(TINY), Cache.open(arg), replace(FAST, sync_every=3),
                         rank=rank, world_size=world,
                         on_report=lambda m, s: reports.append(s["step"]))
            torch.save({"model": result.model.state_dict(), "reports": reports, "step": result.step},
                       f"{out}/rank{rank}.pt")
    finally:
        dist.barrier()  # neither leaves while the other still talks to it
        dist.destroy_process_group()


def _spawn(tmp_path, job: str, arg=None) -> list[dict]:
    mp.start_processes(_run, args=(2, _free_port(), job, arg, str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_average_weights_is_the_mean_of_every_float_tensor_and_keeps_the_layout(tmp_path):
    ranks = _spawn(tmp_path, "average")
    for key, value in ranks[0]["before"].items():
        if value.is_floating_point():
            mean = (ranks[0]["before"][key] + ranks[1]["before"][key]) / 2
            torch.testing.assert_close(ranks[0]["after"][key], mean)
            torch.testing.assert_close(ranks[1]["after"][key], mean)
        else:  # BatchNorm's num_batches_tracked: an integer count, left as it was
            assert torch.equal(ranks[0]["after"][key], value)
    assert ranks[0]["channels_last"] and ranks[1]["channels_last"]


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache"))


def test_local_sgd_workers_end_with_one_model(tmp_path, cache_path):
    ranks = _spawn(tmp_path, "fit", cache_path)
    # 48 train rows / 2 workers / batch 8 = 3 steps an epoch, 2 epochs; reports at epoch ends
    assert ranks[0]["step"] == ranks[1]["step"] == 6
    assert ranks[0]["reports"] == ranks[1]["reports"] == [3, 6]
    for key, value in ranks[0]["model"].items():  # averaged before each report: identical
        assert torch.equal(value, ranks[1]["model"][key]), key
    torch.manual_seed(0)
    untrained = VAE(TINY).state_dict()
    assert any(not torch.allclose(v.float(), untrained[k].float()) for k, v in ranks[0]["model"].items()
               if k in untrained and v.is_floating_point())


def test_local_sgd_refuses_a_ddp_wrapped_model(tmp_path, cache_path):
    for rank in _spawn(tmp_path, "ddp", cache_path):
        assert "sync_every=3 (local SGD) with a DDP-wrapped model" in rank["outcome"]


def test_ranks_agree_on_the_time_budget_without_a_broadcast_every_step(tmp_path, cache_path):
    """A broadcast makes every rank wait for its device (on GPUs, a pipeline drain), so the ranks
    agree on the clock only where the loop reads the loss back: yet they stop at the same step and
    follow the same time-based learning rate (DDP replicas with different rates would drift)."""
    ranks = _spawn(tmp_path, "clock", cache_path)
    steps = ranks[0]["step"]
    assert steps == ranks[1]["step"]
    assert 0 < steps < 10_000 * 3  # the budget, not the epochs, ended it
    for key, value in ranks[0]["model"].items():
        if key != "log_sigma":  # a buffer: each rank's running estimate, DDP copies rank 0's per forward
            assert torch.equal(value, ranks[1]["model"][key]), key
    for rank in ranks:  # one agreement per 4 steps, plus a few at the start, the reports and the end
        assert rank["broadcasts"] <= steps // 4 + 6, (rank["broadcasts"], steps)
    assert ranks[0]["history"][-1]["elapsed_s"] >= 0.04 * 60
