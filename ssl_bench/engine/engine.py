"""The engine: runs a plan's jobs that are not done, each claimed with a lock, and records each as done or failed.

Any number of engines may run the same plan on one results folder at once (several processes, machines or array
tasks): each claims a job, and a pretraining, with a lock file before it starts, skips work that another holds, and
comes back to it until every job is done or failed. A job that fails writes ``error.json`` and the rest of the plan
goes on, unless ``fail_fast``. The launchers (:mod:`ssl_bench.launchers`) only decide where engines run.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ssl_bench.config import RunConfig
from ssl_bench.engine.provenance import JobRun, now, result_record, weights_digest
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.locks import Lock
from ssl_bench.planning import Job, Plan, digest
from ssl_bench.pretraining import PretrainingCache
from ssl_bench.protocol import Context
from ssl_bench.record import (
    FailureRecord,
    PretrainingRecord,
    UnreadableRecord,
    read_failure,
    read_record,
    write_record,
)
from ssl_bench.resources import PeakMemory
from ssl_bench.results import (
    CannotWrite,
    artefact_problem,
    failure_path,
    load_torch,
    result_path,
    save_torch,
    selected_model_path,
    write_text,
)
from ssl_bench.stopping import stop_requested, stops_on_signals

#: How often an engine looks again at work that other engines hold.
CLAIM_POLL_SECONDS = 5.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device auto or cpu.")
    return torch.device(name)


def job_is_done(results: Path, job: Job, plan: Plan) -> bool:
    """A job is done when its record reads back and validates (and its model is kept and passes its check, if
    others need it)."""
    try:
        read_record(result_path(results, job.id))
    except DataError:
        return False
    return job.id not in plan.upstream_ids or artefact_problem(selected_model_path(results, job.id)) is None


@dataclass(frozen=True)
class RunSummary:
    """What a run did: the result files it wrote, and the jobs that failed (now or before, not retried)."""

    written: list[Path]
    failed: list[FailureRecord]


class Engine:
    """Runs a plan's jobs that are not done, reusing cached pretrainings and upstream models."""

    def __init__(
        self,
        config: RunConfig,
        device: torch.device,
        progress: bool = True,
        echo: Callable[[str], None] = print,
        *,
        fail_fast: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.config, self.device, self.progress, self.echo = config, device, progress, echo
        self.fail_fast, self.retry_failed = fail_fast, retry_failed
        self.config_hash = digest(config.to_toml())
        self.pretrainings = PretrainingCache(config, device, progress, echo)
        self._failed_pretrainings: dict[str, FailureRecord] = {}
        self._started = time.time()

    def is_done(self, job: Job, plan: Plan) -> bool:
        return job_is_done(self.config.results, job, plan)

    def _failed_before(self, job: Job) -> FailureRecord | None:
        try:
            return read_failure(failure_path(self.config.results, job.id))
        except DataError:
            return None

    def _failed_since_start(self, job: Job) -> FailureRecord | None:
        failure = self._failed_before(job)
        return failure if failure is not None and failure.unix_time >= self._started else None

    def run(self, plan: Plan) -> RunSummary:
        results = self.config.results
        done = {job.id for job in plan.jobs if self.is_done(job, plan)}
        self._say_why_finished_jobs_run_again(plan, done)
        if done and self.config.overwrite == "never":
            raise ConfigError(
                f"{len(done)} of {len(plan.jobs)} results of this plan already exist in {results}. "
                "Use --overwrite missing to compute only the absent ones, or --overwrite always to redo all."
            )
        todo = plan.jobs if self.config.overwrite == "always" else [j for j in plan.jobs if j.id not in done]
        retry = self.retry_failed or self.config.overwrite == "always"
        failures = {} if retry else {j.id: f for j in todo if (f := self._failed_before(j))}
        todo = [job for job in todo if job.id not in failures]
        self._started = time.time()
        before = f", {len(failures)} failed before (--retry-failed runs them again)" if failures else ""
        self.echo(f"{len(plan.jobs)} jobs planned, {len(done)} already done{before}, {len(todo)} to run.")
        results.mkdir(parents=True, exist_ok=True)
        write_text(results / "run-config.toml", self.config.to_toml())
        written = []
        pending = list(todo)
        with stops_on_signals(), tqdm(total=len(todo), desc="jobs", unit="job", disable=not self.progress) as bar:
            while pending:
                waiting = []
                for job in pending:
                    state, path = self._attempt(job, plan, failures)
                    if state == "busy":
                        waiting.append(job)
                        continue
                    written += [path] if path else []
                    bar.update()
                if len(waiting) == len(pending):
                    time.sleep(CLAIM_POLL_SECONDS)  # all that is left is held by other engines
                pending = waiting
        return RunSummary(written, list(failures.values()))

    def _say_why_finished_jobs_run_again(self, plan: Plan, done: set[str]) -> None:
        """One line for each job that left a result but is not done: its record cannot be read, or the model that
        others continue from failed its check."""
        for job in plan.jobs:
            path = result_path(self.config.results, job.id)
            if job.id in done or not path.exists():
                continue
            try:
                read_record(path)
                model = selected_model_path(self.config.results, job.id)
                why = f"{model} {artefact_problem(model)}"
            except UnreadableRecord as error:
                why = error.problem
            self.echo(f"{why}: running job {job.id} ({job.variant}, {job.protocol_label}) again")

    def _attempt(self, job: Job, plan: Plan, failures: dict[str, FailureRecord]) -> tuple[str, Path | None]:
        """Run ``job`` if nobody else is: ``("done", path)``, ``("failed", None)`` or ``("busy", None)``."""
        if job.upstream is not None and not self.is_done(job.upstream, plan):
            upstream = failures.get(job.upstream.id) or self._failed_since_start(job.upstream)
            if upstream is None:
                return "busy", None  # another engine runs the upstream job
            error = f"its upstream job {upstream.job_id} ({upstream.protocol}) failed: {upstream.summary}"
            failures[job.id] = self._fail(job, "upstream", error, "")
            return "failed", None
        if failure := self._failed_since_start(job):  # another engine ran it, and it failed
            failures[job.id] = failure
            return "failed", None
        lock = Lock(result_path(self.config.results, job.id).parent)
        if not lock.acquire():
            return ("done", None) if self.is_done(job, plan) else ("busy", None)
        with lock:
            if lock.taken_over:
                self.echo(f"job {job.id}: took over the lock of {lock.taken_over.describe()}, which is gone")
            if self.is_done(job, plan) and self.config.overwrite != "always":
                return "done", None  # another engine finished it just before
            return self._run_claimed(job, plan, failures)

    def _run_claimed(self, job: Job, plan: Plan, failures: dict[str, FailureRecord]) -> tuple[str, Path | None]:
        if job.pretraining.id in self._failed_pretrainings:
            failures[job.id] = self._fail(job, "pretraining", self._failed_pretrainings[job.pretraining.id].error, "")
            return "failed", None
        phase = "pretraining"
        try:
            pretrained = self.pretrainings.encoder(job.pretraining)
            if pretrained is None:
                return "busy", None  # another engine is pretraining it
            phase = "protocol"
            path = self.run_job(job, plan, *pretrained)
        except Exception as error:  # any failure of a job, plugin code included, must not end the run
            if stop_requested():
                raise KeyboardInterrupt from error  # a stop that landed inside torch, not a failure of the job
            if isinstance(error, CannotWrite):
                raise  # a full disk or a read-only folder fails every job after this one too: stop here
            if self.fail_fast:
                raise
            failures[job.id] = self._fail(job, phase, f"{type(error).__name__}: {error}", traceback.format_exc())
            if phase == "pretraining":
                self._failed_pretrainings[job.pretraining.id] = failures[job.id]
            return "failed", None
        failure_path(self.config.results, job.id).unlink(missing_ok=True)
        return "done", path

    def _fail(self, job: Job, phase: str, error: str, trace: str) -> FailureRecord:
        failure = FailureRecord(
            job_id=job.id,
            variant=job.variant,
            task=job.task.name,
            protocol=job.protocol_label,
            label_fraction=job.label_fraction,
            seed_index=job.seed_index,
            budget=self.config.budget.name,
            phase=phase,
            error=error,
            traceback=trace,
            spec=job.spec,
            host=socket.gethostname(),
            pid=os.getpid(),
            unix_time=time.time(),
        )
        write_record(failure_path(self.config.results, job.id), failure)
        self.echo(
            f"job {job.id} ({failure.variant}, {failure.task}, {failure.protocol}) failed in {phase}: {failure.summary}"
        )
        return failure

    def _context(self, job: Job, plan: Plan, encoder: torch.nn.Module) -> Context:
        start = None
        if job.upstream is not None:
            path = selected_model_path(self.config.results, job.upstream.id)
            start = load_torch(path, map_location=self.device, weights_only=True)
        return Context(
            encoder=encoder,
            data=plan.data[job.task.name],
            task=job.task,
            settings=job.settings,
            label_fraction=job.label_fraction,
            generator=torch.Generator().manual_seed(job.seed),
            device=self.device,
            pretrained=job.pretraining.pretrained,
            start=start,
            progress=self.progress,
            workdir=result_path(self.config.results, job.id).parent,
            shapes=plan.data[job.task.shape_source].train.masks if job.protocol.uses_shapes else None,
            split_seed=job.split_seed,
        )

    def run_job(self, job: Job, plan: Plan, encoder: torch.nn.Module, pretraining: PretrainingRecord | None) -> Path:
        """Run ``job``'s protocol on ``encoder`` and write its record (and its model, if another job needs it)."""
        started = now()
        encoder_digest = weights_digest(encoder)  # before the protocol runs: it must not see a trained copy
        with PeakMemory(self.device) as memory:
            outcome = job.protocol.run(self._context(job, plan, encoder))
        if job.id in plan.upstream_ids:
            # Written before the record: a job is done only once everything it leaves for others is there.
            state = {name: tensor.cpu() for name, tensor in (outcome.state or {}).items()}
            if not state:
                raise ConfigError(
                    f"protocol {job.protocol.name} returned no model state, but another continues from it"
                )
            save_torch(selected_model_path(self.config.results, job.id), state)
        run = JobRun(
            device=self.device,
            encoder=job.pretraining.encoder,
            budget=self.config.budget.name,
            config_hash=self.config_hash,
            peak_mb=memory.peak_mb,
            started=started,
            encoder_digest=encoder_digest,
        )
        return write_record(result_path(self.config.results, job.id), result_record(job, outcome, pretraining, run))
