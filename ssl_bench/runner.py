"""Plans a run (methods x tasks x protocols x label fractions x seeds) as hashed jobs; executes what is not done.

A job is one (pretraining, task, protocol, label fraction, seed). Its id hashes its fully resolved spec, which
includes a fingerprint of the task's data as read, and its seed derives from that id. Pretraining is keyed by
its own id (method, non-default options, versions, encoder, pool fingerprint, profile, seed index) and is
shared by every job that needs it. A protocol that continues from another (``finetune`` from ``frozen``) makes
a job that depends on that protocol's job: the plan puts it first and keeps its selected model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import socket
import subprocess
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import ssl_bench
from ssl_bench.config import RunConfig, make_method, protocol_settings
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.labelled import labelled_count
from ssl_bench.locks import Lock
from ssl_bench.method import Method, non_default_options, schedule, variant_name
from ssl_bench.models import VGG16_BN_TINY, create_encoder
from ssl_bench.plugins import Registry
from ssl_bench.pools import PreparedPool, prepare_extras, prepare_pool, resolve_pool
from ssl_bench.pretrain import BEST_ENCODER, pretrain
from ssl_bench.protocol import Context, Outcome, Protocol, changed_settings
from ssl_bench.record import (
    Compute,
    FailureRecord,
    MetricRecord,
    PoolRecord,
    PretrainingRecord,
    ProtocolRecord,
    ResultRecord,
    read_failure,
    read_record,
    write_record,
)
from ssl_bench.resources import PeakMemory
from ssl_bench.results import (
    failure_path,
    pool_cache_dir,
    pretrain_dir,
    result_path,
    save_torch,
    selected_model_path,
    write_text,
)
from ssl_bench.stats import MIN_SEEDS
from ssl_bench.task import ClassificationData, SegmentationData, Task

TaskData = SegmentationData | ClassificationData
#: How often a worker looks again at work that other workers hold.
POLL_SECONDS = 5.0
PRETRAINING_RECORD = "pretraining.json"


def digest(spec: object) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of ``module``'s parameters and buffers, by name: equal weights give equal digests on any device."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def finished_pretraining(folder: Path) -> PretrainingRecord | None:
    """The record of the pretraining in ``folder`` if it finished (its weights and a readable record are there)."""
    record = folder / PRETRAINING_RECORD
    if not ((folder / "encoder.pt").exists() and record.exists()):
        return None
    try:
        return read_record(record, PretrainingRecord)
    except DataError:
        return None  # a record that cannot be read marks nothing: the pretraining runs again


def seed_of(identity: str) -> int:
    return int(identity[:8], 16)


@dataclass(frozen=True)
class Pretraining:
    """One encoder to produce; without a pool (no stages) it stays at its seeded random init."""

    id: str
    spec: dict
    method: Method
    channels: int
    pool: PreparedPool | None

    @property
    def seed(self) -> int:
        return seed_of(self.id)


@dataclass(frozen=True)
class Job:
    """One protocol run of one pretraining on one task, label fraction and seed."""

    id: str
    spec: dict
    pretraining: Pretraining
    task: Task
    protocol: Protocol
    settings: object
    label_fraction: float
    seed_index: int
    #: The job whose selected model this one starts from (``finetune`` from ``frozen``), or None.
    upstream: Job | None = None

    @property
    def seed(self) -> int:
        return seed_of(self.id)

    @property
    def split_seed(self) -> int:
        """The seed of the labelled subset: one per task and seed index, shared by every method and protocol."""
        return seed_of(digest({"task": self.task.name, "seed_index": self.seed_index}))


@dataclass(frozen=True)
class Plan:
    """The jobs in run order (every job after the one it continues from) and each task's data, loaded once."""

    jobs: list[Job]
    data: dict[str, TaskData]

    @cached_property  # asked for every job, again and again while workers poll
    def upstream_ids(self) -> set[str]:
        """Jobs whose selected model another job starts from: their model is kept on disk."""
        return {job.upstream.id for job in self.jobs if job.upstream is not None}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device; use --device auto or cpu.")
    return torch.device(name)


def _pretraining(
    method: Method, task: Task, seed_index: int, config: RunConfig, registry: Registry, pools: dict
) -> Pretraining:
    spec = {
        "method": method.name,
        "options": non_default_options(method.options),
        "method_version": method.version,
        "plugin": registry.plugin_version("methods", method.name),
        "encoder": config.encoder,
        "channels": task.channels,
        "profile": config.profile,
        "seed_index": seed_index,
        "ssl_bench": ssl_bench.__version__,
    }
    pool = None
    if schedule(method, config.profile):
        if task.modality not in pools:
            source = resolve_pool(task.modality, registry, config.data_root, config.pools)
            pools[task.modality] = prepare_pool(source, pool_cache_dir(config.results))
        pool = pools[task.modality]
        spec["pool"] = {"id": pool.id, "fingerprint": pool.fingerprint}
    return Pretraining(digest(spec), spec, method, task.channels, pool)


def variant_label(method: Method, encoder: str) -> str:
    """The leaderboard's row name: the method variant, and the encoder unless it is the shared default."""
    return method.variant if encoder == VGG16_BN_TINY else f"{method.variant}@{encoder}"


def label_fractions(config: RunConfig, task: Task) -> tuple[float, ...]:
    if config.label_fractions is not None:
        return config.label_fractions
    return (1.0,) if config.profile == "demo" else task.label_fractions


def _available_tasks(config: RunConfig, registry: Registry, echo: Callable[[str], None]) -> list[Task]:
    """The run's tasks whose data is there. A task named in the run that cannot run is an error, not a skip."""
    tasks = []
    default = [name for name, task in registry.tasks.items() if task.default_run]
    for name in config.tasks if config.tasks is not None else default:
        task = registry.task(name)
        availability = task.availability(config.data_root)
        if availability.ok:
            tasks.append(task)
        elif config.tasks is not None:
            raise DataError(f"task {name} was asked for but cannot run: {availability.reason}")
        else:
            echo(f"skipping task {name}: {availability.reason}")
    return tasks


def _protocols(config: RunConfig, registry: Registry) -> dict[str, Protocol]:
    default = [name for name, protocol in registry.protocols.items() if protocol.default_run]
    names = config.protocols if config.protocols is not None else default
    return {name: registry.protocol(name)() for name in names}


def _load_shape_sources(
    tasks: list[Task],
    protocols: dict[str, Protocol],
    config: RunConfig,
    registry: Registry,
    data: dict[str, TaskData],
    echo: Callable[[str], None],
) -> None:
    """Adds to ``data`` the shape source of each task that a protocol using shapes serves; where that source's
    data is absent, says which protocols are left out on the task (its other protocols still run)."""
    for task in tasks:
        using = [name for name, protocol in protocols.items() if protocol.uses_shapes and protocol.serves(task)]
        if not using or task.shape_source in data:
            continue
        source = registry.task(task.shape_source)
        if source.kind != "segmentation":
            raise ConfigError(f"task {task.name}'s shape source {source.name} is a {source.kind} task, not masks")
        availability = source.availability(config.data_root)
        if availability.ok:
            data[source.name] = source.load(config.data_root)
        else:
            echo(
                f"leaving out {', '.join(using)} on {task.name}: its shape source {source.name} cannot run: "
                f"{availability.reason}"
            )


class _Planner:
    """Builds each job once, its upstream job first (memoised, so a shared upstream is one job)."""

    def __init__(self, config: RunConfig, registry: Registry, data: dict[str, TaskData]) -> None:
        self.config, self.registry = config, registry
        self.fingerprints = {name: task_data.fingerprint() for name, task_data in data.items()}  # hashed once
        self.jobs: dict[tuple, Job] = {}

    def job(self, pretraining: Pretraining, task: Task, protocol_name: str, fraction: float, seed_index: int) -> Job:
        key = (pretraining.id, task.name, protocol_name, fraction)
        if key in self.jobs:
            return self.jobs[key]
        protocol = self.registry.protocol(protocol_name)()
        if not protocol.serves(task):
            raise ConfigError(
                f"protocol {protocol_name} serves {', '.join(protocol.task_kinds)} tasks, not {task.name} "
                f"({task.kind}); leave it out of the run or pick tasks it serves"
            )
        upstream_name = protocol.continues_from(task, pretrained=pretraining.pool is not None)
        upstream = self.job(pretraining, task, upstream_name, fraction, seed_index) if upstream_name else None
        overrides = (self.config.protocols or {}).get(protocol_name, {})
        base = protocol.settings(self.config.profile, task)
        settings = protocol_settings(protocol_name, base, overrides)
        spec = {
            "pretraining": pretraining.spec,
            "variant": variant_label(pretraining.method, self.config.encoder),
            "task": task.name,
            "task_version": task.version,
            "task_plugin": self.registry.plugin_version("tasks", task.name),
            "data": self.fingerprints[task.name],
            "augmentation": {"flips": task.flips, "rotation_degrees": task.rotation_degrees},
            "protocol": {
                "name": protocol_name,
                "label": variant_name(protocol_name, changed_settings(settings, base)),
                "version": protocol.version,
                "plugin": self.registry.plugin_version("protocols", protocol_name),
                "settings": dataclasses.asdict(settings),
            },
            "continues_from": upstream.id if upstream else None,
            "label_fraction": fraction,
            "seed_index": seed_index,
            "profile": self.config.profile,
            "ssl_bench": ssl_bench.__version__,
        }
        if not task.ordered_split:
            # Jobs of these tasks once labelled the training list's prefix; their ids must differ from those jobs'.
            # Tasks that keep their released order label the prefix still, and keep their ids and cached results.
            spec["labelled_subset"] = "seeded permutation"
        if protocol.uses_shapes:  # the shapes steer training: other shapes, another job
            source = task.shape_source
            spec["shapes"] = {
                "task": source,
                "task_version": self.registry.task(source).version,
                "task_plugin": self.registry.plugin_version("tasks", source),
                "data": self.fingerprints[source],
            }
        job = Job(digest(spec), spec, pretraining, task, protocol, settings, fraction, seed_index, upstream)
        self.jobs[key] = job
        return job


def build_plan(config: RunConfig, registry: Registry, echo: Callable[[str], None] = print) -> Plan:
    """Every job of the run, each after the job it continues from; tasks whose data is absent are left out, and so
    are protocols using shapes on a task whose shape source's data is absent."""
    methods = [make_method(registry, name, options) for name, options in config.methods.items()]
    tasks = _available_tasks(config, registry, echo)
    data = {task.name: task.load(config.data_root) for task in tasks}
    protocols = _protocols(config, registry)
    _load_shape_sources(tasks, protocols, config, registry, data, echo)
    planner = _Planner(config, registry, data)
    pools: dict[str, PreparedPool] = {}
    for method in methods:
        for seed_index in range(config.seeds):
            for task in tasks:
                pretraining = _pretraining(method, task, seed_index, config, registry, pools)
                for fraction in label_fractions(config, task):
                    labelled_count(len(data[task.name].train), fraction)  # too few labelled: refused before training
                    for name, protocol in protocols.items():
                        if protocol.serves(task) and (not protocol.uses_shapes or task.shape_source in data):
                            planner.job(pretraining, task, name, fraction, seed_index)
    if config.seeds < MIN_SEEDS:
        echo(
            f"note: with {config.seeds} seed(s) the leaderboard can claim no difference between methods: a claim "
            f"takes training seeds as its replicates and needs {MIN_SEEDS} per method (--seeds {MIN_SEEDS})"
        )
    # Insertion order already puts every upstream job before the jobs that continue from it.
    return Plan(list(planner.jobs.values()), data)


@cache
def git_commit() -> str | None:
    try:
        output = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(ssl_bench.__file__).parent, capture_output=True, text=True
        )
    except OSError:
        return None
    return output.stdout.strip() or None if output.returncode == 0 else None


def _versions() -> dict[str, str]:
    import lightly
    import timm

    return {
        "ssl_bench": ssl_bench.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightly": lightly.__version__,
        "python": platform.python_version(),
    }


def job_is_done(results: Path, job: Job, plan: Plan) -> bool:
    """A job is done when its record reads back and validates (and its model is kept, if others need it)."""
    try:
        read_record(result_path(results, job.id))
    except DataError:
        return False
    return job.id not in plan.upstream_ids or selected_model_path(results, job.id).exists()


@dataclass(frozen=True)
class RunSummary:
    """What a run did: the result files it wrote, and the jobs that failed (now or before, not retried)."""

    written: list[Path]
    failed: list[FailureRecord]


class Executor:
    """Runs a plan's jobs that are not done, reusing cached pretrainings and upstream models.

    Any number of executors may run the same plan on one results folder at once (several processes, machines
    or array tasks): each claims a job, and a pretraining, with a lock file before it starts, skips work that
    another holds, and comes back to it until every job is done or failed. A job that fails writes
    ``error.json`` and the rest of the plan goes on, unless ``fail_fast``.
    """

    def __init__(
        self,
        config: RunConfig,
        device: torch.device,
        progress: bool = True,
        echo=print,
        *,
        fail_fast: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.config, self.device, self.progress, self.echo = config, device, progress, echo
        self.fail_fast, self.retry_failed = fail_fast, retry_failed
        self.config_hash = digest(config.to_toml())
        self._refreshed: set[str] = set()
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
        with tqdm(total=len(todo), desc="jobs", unit="job", disable=not self.progress) as bar:
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
                    time.sleep(POLL_SECONDS)  # all that is left is held by other workers
                pending = waiting
        return RunSummary(written, list(failures.values()))

    def _attempt(self, job: Job, plan: Plan, failures: dict[str, FailureRecord]) -> tuple[str, Path | None]:
        """Run ``job`` if nobody else is: ``("done", path)``, ``("failed", None)`` or ``("busy", None)``."""
        if job.upstream is not None and not self.is_done(job.upstream, plan):
            upstream = failures.get(job.upstream.id) or self._failed_since_start(job.upstream)
            if upstream is None:
                return "busy", None  # another worker runs the upstream job
            error = f"its upstream job {upstream.job_id} ({upstream.protocol}) failed: {upstream.summary}"
            failures[job.id] = self._fail(job, "upstream", error, "")
            return "failed", None
        if failure := self._failed_since_start(job):  # another worker ran it, and it failed
            failures[job.id] = failure
            return "failed", None
        lock = Lock(result_path(self.config.results, job.id).parent)
        if not lock.acquire():
            return ("done", None) if self.is_done(job, plan) else ("busy", None)
        with lock:
            if lock.taken_over:
                self.echo(f"job {job.id}: took over the lock of {lock.taken_over.describe()}, which is gone")
            if self.is_done(job, plan) and self.config.overwrite != "always":
                return "done", None  # another worker finished it just before
            return self._run_claimed(job, plan, failures)

    def _run_claimed(self, job: Job, plan: Plan, failures: dict[str, FailureRecord]) -> tuple[str, Path | None]:
        if job.pretraining.id in self._failed_pretrainings:
            failures[job.id] = self._fail(job, "pretraining", self._failed_pretrainings[job.pretraining.id].error, "")
            return "failed", None
        phase = "pretraining"
        try:
            pretrained = self.pretrained_encoder(job.pretraining)
            if pretrained is None:
                return "busy", None  # another worker is pretraining it
            phase = "protocol"
            path = self.run_job(job, plan, *pretrained)
        except Exception as error:  # any failure of a job, plugin code included, must not end the run
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
            variant=job.spec["variant"],
            task=job.task.name,
            protocol=job.spec["protocol"]["label"],
            label_fraction=job.label_fraction,
            seed_index=job.seed_index,
            profile=self.config.profile,
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

    def _fresh_encoder(self, pretraining: Pretraining) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pretraining.seed)
            return create_encoder(self.config.encoder, in_chans=pretraining.channels)

    def pretrained_encoder(self, pretraining: Pretraining) -> tuple[torch.nn.Module, PretrainingRecord | None] | None:
        """The encoder of ``pretraining``, trained now or loaded from the cache, and its record (None for a method
        without pretraining); None while another worker holds its lock (it is training it)."""
        encoder = self._fresh_encoder(pretraining)
        if pretraining.pool is None:
            return encoder, None
        folder = pretrain_dir(self.config.results, pretraining.id)
        weights = folder / "encoder.pt"
        refresh = self.config.overwrite == "always" and pretraining.id not in self._refreshed
        if refresh or finished_pretraining(folder) is None:
            lock = Lock(folder)
            if not lock.acquire():
                return None
            with lock:
                if refresh:
                    for name in ("encoder.pt", PRETRAINING_RECORD, "state.pt", BEST_ENCODER):
                        (folder / name).unlink(missing_ok=True)
                    self._refreshed.add(pretraining.id)
                if finished_pretraining(folder) is None:  # not finished by another just before
                    self._pretrain(pretraining, encoder, folder)
        encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        return encoder, finished_pretraining(folder)

    def _pretrain(self, pretraining: Pretraining, encoder: torch.nn.Module, folder: Path) -> None:
        self.echo(f"pretraining {pretraining.method.variant} ({pretraining.id}) on {pretraining.pool.id}")
        encoder.to(self.device)
        with PeakMemory(self.device) as memory:
            outcome = pretrain(
                pretraining.method,
                encoder,
                pretraining.pool,
                profile=self.config.profile,
                seed=pretraining.seed,
                device=self.device,
                workdir=folder,
                extras=prepare_extras(pretraining.pool, pretraining.method, pool_cache_dir(self.config.results)),
                progress=self.progress,
            )
        save_torch(folder / "encoder.pt", outcome.encoder_state)
        record = PretrainingRecord(
            spec=pretraining.spec,
            seconds=outcome.seconds,
            source_images=outcome.source_images,
            images_per_second=outcome.images_per_second,
            views_per_second=outcome.images_per_second * pretraining.method.views_per_image,
            peak_memory_mb=memory.peak_mb,
            resumed_from_step=outcome.resumed_from_step,
            val_losses=outcome.val_losses,
            selected_epoch=outcome.selected_epoch,
            device=self.device.type,
            torch_threads=torch.get_num_threads(),
        )
        write_record(folder / PRETRAINING_RECORD, record)
        # The record is the marker of a finished pretraining; what only resuming needed goes after it.
        for leftover in ("state.pt", BEST_ENCODER):
            (folder / leftover).unlink(missing_ok=True)
        for orphan in folder.glob(".*.tmp"):
            orphan.unlink(missing_ok=True)

    def _context(self, job: Job, plan: Plan, encoder: torch.nn.Module) -> Context:
        start = None
        if job.upstream is not None:
            path = selected_model_path(self.config.results, job.upstream.id)
            start = torch.load(path, map_location=self.device, weights_only=True)
        return Context(
            encoder=encoder,
            data=plan.data[job.task.name],
            task=job.task,
            settings=job.settings,
            label_fraction=job.label_fraction,
            generator=torch.Generator().manual_seed(job.seed),
            device=self.device,
            pretrained=job.pretraining.pool is not None,
            start=start,
            progress=self.progress,
            workdir=result_path(self.config.results, job.id).parent,
            shapes=plan.data[job.task.shape_source].train.masks if job.protocol.uses_shapes else None,
            split_seed=job.split_seed,
        )

    def run_job(
        self, job: Job, plan: Plan, encoder: torch.nn.Module, pretrain_record: PretrainingRecord | None
    ) -> Path:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
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
        record = self._record(job, outcome, pretrain_record, memory.peak_mb, started, encoder_digest)
        return write_record(result_path(self.config.results, job.id), record)

    def _record(
        self,
        job: Job,
        outcome: Outcome,
        pretrain: PretrainingRecord | None,
        peak_mb: float | None,
        started: str,
        encoder_digest: str,
    ) -> ResultRecord:
        metrics = job.protocol.metrics(job.task)
        missing = {metric.name for metric in metrics} - set(outcome.scores)
        if missing:
            raise ConfigError(f"protocol {job.protocol.name} did not report {', '.join(sorted(missing))}")
        pool = job.pretraining.spec.get("pool")
        protocol_spec = job.spec["protocol"]
        return ResultRecord(
            job_id=job.id,
            spec=job.spec,
            method=job.pretraining.method.name,
            variant=job.spec["variant"],
            pretrained=job.pretraining.pool is not None,
            encoder=self.config.encoder,
            pool=PoolRecord(**pool) if pool else None,
            task=job.task.name,
            task_kind=job.task.kind,
            task_modality=job.task.modality,
            data_fingerprint=job.spec["data"],
            protocol=ProtocolRecord(
                name=protocol_spec["name"],
                label=protocol_spec["label"],
                version=protocol_spec["version"],
                settings=protocol_spec["settings"],
                frozen_encoder=job.protocol.frozen_encoder,
                continued_from=job.spec["continues_from"],
            ),
            label_fraction=job.label_fraction,
            seed_index=job.seed_index,
            seed=job.seed,
            profile=self.config.profile,
            headline_metric=metrics[0].name,
            metrics={
                metric.name: _metric_record(metric.higher_is_better, outcome.scores[metric.name]) for metric in metrics
            },
            selection=outcome.selection,
            compute=Compute(
                device=self.device.type,
                protocol_seconds=outcome.seconds,
                peak_memory_mb=peak_mb,
                train_images_per_second=outcome.train_images_per_second,
                torch_threads=torch.get_num_threads(),
                **_pretraining_compute(pretrain),
            ),
            versions={
                **_versions(),
                "plugins": sorted(
                    {job.spec["pretraining"]["plugin"], job.spec["task_plugin"], protocol_spec["plugin"]}
                ),
            },
            config_hash=self.config_hash,
            git_commit=git_commit(),
            started=started,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            unix_time=time.time(),
            encoder_digest=encoder_digest,
        )


def _pretraining_compute(record: PretrainingRecord | None) -> dict[str, Any]:
    """The pretraining's share of a job's :class:`Compute`; nothing for a method without pretraining."""
    if record is None:
        return {}
    return {
        "pretrain_seconds": record.seconds,
        "pretrain_images_per_second": record.images_per_second,
        "pretrain_views_per_second": record.views_per_second,
        "pretrain_source_images": record.source_images,
        "pretrain_peak_memory_mb": record.peak_memory_mb,
        "pretrain_torch_threads": record.torch_threads,
    }


def _metric_record(higher_is_better: bool, scores) -> MetricRecord:
    return MetricRecord(
        higher_is_better=higher_is_better,
        per_image=list(scores.per_image) if scores.per_image is not None else None,
        ids=list(scores.ids) if scores.ids is not None else None,
        value=scores.value,
    )
