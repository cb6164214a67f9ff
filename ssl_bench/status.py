"""``ssl-bench status``: where a run stands, read from its results folder alone (from any machine that sees it).

Every job of the run's plan (rebuilt from ``run-config.toml``) is done, running (a live lock: who, since when),
failed (its ``error.json``) or pending; the time left is estimated per protocol from the finished jobs' measured
seconds, and for pretrainings from the finished ones'.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ssl_bench.engine import job_is_done
from ssl_bench.errors import DataError
from ssl_bench.locks import STALE_SECONDS, read_holder
from ssl_bench.planning import Job, Plan
from ssl_bench.pretraining import finished_pretraining
from ssl_bench.record import read_failure, read_record
from ssl_bench.results import failure_path, pretrain_dir, result_path

STATES = ("done", "running", "failed", "pending")


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: str
    detail: str = ""
    seconds: float | None = None  # a done job's protocol wall time


def job_status(results: Path, job: Job, plan: Plan) -> JobStatus:
    """The state of ``job`` under ``results``."""
    if job_is_done(results, job, plan):
        return JobStatus(job, "done", seconds=read_record(result_path(results, job.id)).compute.protocol_seconds)
    holder = read_holder(result_path(results, job.id).parent / "lock")
    if holder is not None and holder.is_alive(STALE_SECONDS):
        return JobStatus(job, "running", f"held by {holder.describe()}")
    try:
        return JobStatus(job, "failed", read_failure(failure_path(results, job.id)).summary)
    except DataError:
        return JobStatus(job, "pending")


def plan_status(results: Path, plan: Plan) -> list[JobStatus]:
    return [job_status(results, job, plan) for job in plan.jobs]


def pretrainings_left(results: Path, plan: Plan) -> tuple[int, float | None]:
    """Pretrainings not finished yet, and the mean seconds of the finished ones (None if none finished)."""
    pretrainings = {job.pretraining.id: job.pretraining for job in plan.jobs if job.pretraining.pool is not None}
    seconds, left = [], 0
    for identity in pretrainings:
        record = finished_pretraining(pretrain_dir(results, identity))
        if record is not None:
            seconds.append(record.seconds)
        else:
            left += 1
    return left, (sum(seconds) / len(seconds) if seconds else None)


def time_left(statuses: list[JobStatus]) -> dict[str, float | None]:
    """Per protocol: estimated seconds for its unfinished jobs (mean of its done jobs' times; None if none)."""
    done: dict[str, list[float]] = {}
    open_jobs: Counter[str] = Counter()
    for status in statuses:
        name = status.job.protocol.name
        if status.state == "done" and status.seconds is not None:
            done.setdefault(name, []).append(status.seconds)
        elif status.state in ("running", "pending"):
            open_jobs[name] += 1
    return {
        name: (count * sum(done[name]) / len(done[name]) if name in done else None) for name, count in open_jobs.items()
    }


def format_seconds(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "unknown (nothing of it finished yet)"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"
