"""A run watched from outside the processes that run its jobs: the results folder alone says what is finished.

The ``local`` and ``slurm`` launchers write the run's configuration where their workers read it, then follow
the result and error files with a progress bar until their workers are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ssl_bench.config import RunConfig
from ssl_bench.engine import RunSummary, job_is_done
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.planning import Plan
from ssl_bench.record import FailureRecord, read_failure
from ssl_bench.results import failure_path, result_path, write_text

#: How often the parent looks at the results folder to show the workers' progress.
PROGRESS_POLL_SECONDS = 2.0


def write_run_config(config: RunConfig) -> Path:
    """``results/run-config.toml``, which every worker rebuilds the plan from."""
    if config.overwrite == "always":
        raise ConfigError(
            f"--overwrite always would redo every job in each worker of executor {config.executor}: "
            "run it with --executor inline"
        )
    config.results.mkdir(parents=True, exist_ok=True)
    return write_text(config.results / "run-config.toml", config.to_toml())


class Watch:
    """Which of a plan's jobs are finished (done, or failed since the run began), read from the results folder."""

    def __init__(self, results: Path, plan: Plan, *, retry_failed: bool, started: float | None = None) -> None:
        self.results, self.plan = results, plan
        # Failures from before the run (``started``, by default now) count as finished, unless they are run again.
        self.since = (started or time.time()) if retry_failed else 0.0
        self._finished: set[str] = set()

    def wait(self, running: Callable[[], bool], progress: bool = True) -> None:
        """Show the finished jobs on a progress bar until ``running()`` says the workers are gone."""
        with tqdm(total=len(self.plan.jobs), desc="jobs", unit="job", disable=not progress) as bar:
            while running():
                bar.update(self._newly_finished())
                time.sleep(PROGRESS_POLL_SECONDS)
            bar.update(self._newly_finished())

    def summary(self) -> RunSummary:
        done = [job.id for job in self.plan.jobs if job_is_done(self.results, job, self.plan)]
        failed = [f for job in self.plan.jobs if job.id not in done and (f := self._failure(job.id))]
        return RunSummary([result_path(self.results, job_id) for job_id in done], failed)

    def _newly_finished(self) -> int:
        """Add the jobs done or failed since the last look (each file is read until it is); how many."""
        before = len(self._finished)
        for job in self.plan.jobs:
            if job.id not in self._finished and (job_is_done(self.results, job, self.plan) or self._failure(job.id)):
                self._finished.add(job.id)
        return len(self._finished) - before

    def _failure(self, job_id: str) -> FailureRecord | None:
        try:
            failure = read_failure(failure_path(self.results, job_id))
        except DataError:
            return None
        return failure if failure.unix_time >= self.since else None
