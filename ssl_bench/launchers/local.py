"""``local``: a pool of worker processes on this machine, ``--workers N`` (CPU) or ``--gpus 0,1,2,3`` (one per GPU).

Each worker is an ordinary ``ssl-bench run --executor inline`` of the same configuration on the same results
folder; the lock files of :mod:`ssl_bench.locks` share the jobs out. A worker is pinned to its GPU with
``CUDA_VISIBLE_DEVICES``; on the CPU the cores are divided among the workers. The plan is built (and pools and
task data cached) once, here, before any worker starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

from ssl_bench.config import RunConfig
from ssl_bench.engine import RunSummary
from ssl_bench.errors import DataError
from ssl_bench.launchers.watch import Watch, write_run_config
from ssl_bench.planning import Plan


def slots(workers: int, gpus: list[str] | None) -> list[dict[str, str]]:
    """The environment of each worker: its GPU, or its share of the CPU cores."""
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpus]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * workers


class LocalPool:
    """One worker process per environment of :func:`slots`."""

    def __init__(
        self,
        config: RunConfig,
        environments: list[dict[str, str]],
        *,
        retry_failed: bool = False,
        progress: bool = True,
        echo=print,
    ) -> None:
        self.config, self.environments = config, environments
        self.retry_failed, self.progress, self.echo = retry_failed, progress, echo

    def run(self, plan: Plan) -> RunSummary:
        """Start the workers; return when every one has exited."""
        config_path = write_run_config(self.config)
        logs = self.config.results / "logs"
        logs.mkdir(exist_ok=True)
        self.echo(f"{len(plan.jobs)} jobs planned for {len(self.environments)} workers (logs: {logs})")
        watch = Watch(self.config.results, plan, retry_failed=self.retry_failed)
        command = [sys.executable, "-m", "ssl_bench", "run", "--config", str(config_path), "--executor", "inline"]
        # The workers only run jobs: this process writes the leaderboards once, when they have all finished.
        command += ["--no-progress", "--no-report", "--overwrite", "missing", "--results", str(self.config.results)]
        command += ["--retry-failed"] if self.retry_failed else []
        workers = []
        for index, environment in enumerate(self.environments):
            with open(logs / f"worker-{index}.log", "w") as log:
                workers.append(subprocess.Popen(command, env={**os.environ, **environment}, stdout=log, stderr=log))
        try:
            watch.wait(lambda: any(worker.poll() is None for worker in workers), self.progress)
        finally:
            _stop(workers)
        broken = [index for index, worker in enumerate(workers) if worker.returncode not in (0, 1)]
        if broken:
            names = ", ".join(str(logs / f"worker-{index}.log") for index in broken)
            raise DataError(f"worker(s) {broken} stopped with an error before finishing their jobs; see {names}")
        return watch.summary()


def _stop(workers: list[subprocess.Popen], grace_seconds: float = 120) -> None:
    """Stop the workers still running (this launcher was stopped: a signal to it alone, say), as a stop signal
    does: each checkpoints its job and exits, and the same command resumes them. None is left orphaned."""
    running = [worker for worker in workers if worker.poll() is None]
    for worker in running:
        worker.terminate()
    for worker in running:
        try:
            worker.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
