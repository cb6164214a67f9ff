"""A local pool of worker processes: ``ssl-bench run --workers N`` (CPU) or ``--gpus 0,1,2,3`` (one per GPU).

Each worker is an ordinary ``ssl-bench run`` of the same configuration on the same results folder; the lock files
of :mod:`ssl_bench.locks` share the jobs out, so the pool needs no scheduler or queue of its own. A worker is
pinned to its GPU with ``CUDA_VISIBLE_DEVICES``; on the CPU the cores are divided among the workers. The plan
is built (and pools and task data cached) once, here, before any worker starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from ssl_bench.config import RunConfig
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.record import FailureRecord, read_failure
from ssl_bench.results import failure_path, result_path, write_text
from ssl_bench.runner import Plan, RunSummary, job_is_done

POLL_SECONDS = 2.0


def slots(workers: int, gpus: list[str] | None) -> list[dict[str, str]]:
    """The environment of each worker: its GPU, or its share of the CPU cores."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus]
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * workers


def run_pool(
    config: RunConfig,
    plan: Plan,
    environments: list[dict[str, str]],
    *,
    retry_failed: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Run ``plan`` with one worker process per environment; return when every worker has exited."""
    if config.overwrite == "always":
        raise ConfigError("--overwrite always redoes every job in each worker: run it with one worker")
    results = config.results
    results.mkdir(parents=True, exist_ok=True)
    config_path = write_text(results / "run-config.toml", config.to_toml())
    logs = results / "logs"
    logs.mkdir(exist_ok=True)
    # Failures from before count as finished, unless they are run again.
    since = time.time() if retry_failed else 0.0
    command = [sys.executable, "-m", "ssl_bench", "run", "--config", str(config_path), "--no-progress"]
    command += ["--overwrite", "missing", "--results", str(results)] + (["--retry-failed"] if retry_failed else [])
    workers = []
    for index, environment in enumerate(environments):
        with open(logs / f"worker-{index}.log", "w") as log:
            workers.append(subprocess.Popen(command, env={**os.environ, **environment}, stdout=log, stderr=log))
    finished: set[str] = set()
    with tqdm(total=len(plan.jobs), desc="jobs", unit="job", disable=not progress) as bar:
        while any(worker.poll() is None for worker in workers):
            bar.update(_newly_finished(results, plan, since, finished))
            time.sleep(POLL_SECONDS)
        bar.update(_newly_finished(results, plan, since, finished))
    failed = [f for job in plan.jobs if (f := _failure(results, job.id, since)) and not job_is_done(results, job, plan)]
    broken = [index for index, worker in enumerate(workers) if worker.returncode not in (0, 1)]
    if broken:
        names = ", ".join(str(logs / f"worker-{index}.log") for index in broken)
        raise DataError(f"worker(s) {broken} stopped with an error before finishing their jobs; see {names}")
    written = [result_path(results, job.id) for job in plan.jobs if job_is_done(results, job, plan)]
    return RunSummary(written, failed)


def _newly_finished(results: Path, plan: Plan, since: float, finished: set[str]) -> int:
    """Add the jobs done or failed since the last look to ``finished`` (each file is read until it is); how many."""
    before = len(finished)
    for job in plan.jobs:
        if job.id not in finished and (job_is_done(results, job, plan) or _failure(results, job.id, since)):
            finished.add(job.id)
    return len(finished) - before


def _failure(results: Path, job_id: str, since: float) -> FailureRecord | None:
    try:
        failure = read_failure(failure_path(results, job_id))
    except DataError:
        return None
    return failure if failure.unix_time >= since else None
