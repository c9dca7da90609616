"""The audit's edit-and-score jobs spread over Ray actors (`faceedit audit --workers N`).

A thin shell over faceedit/audit.py: every actor holds the latent models, the judge, the face
table's codes and the vectors once (shared through Ray's object store), and runs `run_job` on the
jobs it is handed, exactly as the in-process path does; results come back in job order, so the
numbers are the same. Ray touches only this file: join the cluster at --address (or
$RAY_ADDRESS) or start a local Ray on 127.0.0.1 (workers/cluster.py), an ActorPool to map the
jobs, and disconnect at the end.
"""

from __future__ import annotations

from typing import Any, Sequence

from faceedit.audit import Base, Job, JobResult, run_job
from workers.cluster import ray_session

OBJECT_STORE_BYTES = 128 * 1024**2  # the models, codes and vectors of an audit are a few MB


class AuditWorker:
    """One Ray actor: the audit's inputs, held once, and `run` for a job."""

    def __init__(self, models: dict, judge: Any, mu: dict, vectors: dict, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.models, self.judge, self.mu, self.vectors = models, judge, mu, vectors

    def run(self, job: Job) -> JobResult:
        return run_job(job, self.models[job.latent], self.judge, self.mu[job.latent],
                       self.vectors[job.latent])


def ray_runner(workers: int, threads_per_worker: int = 1, progress: bool = True, address: str = ""):
    """A `Runner` for faceedit.audit.run_audit that maps its jobs over `workers` Ray actors, on the
    cluster at `address` (else $RAY_ADDRESS, else a local Ray with `workers` CPUs)."""
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")

    def run(jobs: Sequence[Job], models: dict, judge: Any, base: Base, vectors: dict) -> list[JobResult]:
        import ray
        from ray.util import ActorPool
        from tqdm import tqdm

        with ray_session(address, num_cpus=workers, object_store_bytes=OBJECT_STORE_BYTES):
            remote = ray.remote(num_cpus=1)(AuditWorker)
            refs = [ray.put(x) for x in (models, judge, base.mu, vectors)]
            actors = [remote.remote(*refs, threads_per_worker) for _ in range(workers)]
            pool = ActorPool(actors)
            results = list(tqdm(pool.map(lambda a, job: a.run.remote(job), list(jobs)),
                                total=len(jobs), desc=f"audit ({workers} Ray workers)", unit="job",
                                disable=not progress))
            for a in actors:
                ray.kill(a)
            return results

    return run
