"""Plans a run (methods x tasks x label fractions x seeds) as hashed jobs and executes what is not done.

A job's id hashes its fully resolved spec; its seed derives from that id. Pretraining is keyed by its
own id (method, non-default options, versions, encoder, pool fingerprint, profile, seed index) and is
shared by every job that needs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import torch
from tqdm.auto import tqdm

import ssl_bench
from ssl_bench.classify import ClassificationProtocol, run_classification
from ssl_bench.config import RunConfig, make_method
from ssl_bench.errors import ConfigError
from ssl_bench.method import Method, non_default_options, schedule
from ssl_bench.models import VGG16_BN_TINY, create_encoder
from ssl_bench.plugins import Registry
from ssl_bench.pools import PreparedPool, prepare_extras, prepare_pool, resolve_pool
from ssl_bench.pretrain import BEST_ENCODER, pretrain
from ssl_bench.resources import PeakMemory
from ssl_bench.results import (
    RESULT_SCHEMA_VERSION,
    pool_cache_dir,
    pretrain_dir,
    result_path,
    save_torch,
    write_json,
    write_text,
)
from ssl_bench.task import SegmentationData, Task
from ssl_bench.transfer import REGIMES, TransferProtocol, run_transfer


def digest(spec: object) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


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
    id: str
    spec: dict
    pretraining: Pretraining
    task: Task
    label_fraction: float
    seed_index: int

    @property
    def seed(self) -> int:
        return seed_of(self.id)


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]


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
        "plugin": registry.plugin_version(method.name),
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


def transfer_protocol(profile: str, task: Task) -> TransferProtocol | ClassificationProtocol:
    if task.kind == "classification":
        return ClassificationProtocol.for_profile(profile)
    protocol = TransferProtocol.for_profile(profile)
    return protocol if profile == "demo" else dataclasses.replace(protocol, batch_size=task.paper_batch_size)


def label_fractions(config: RunConfig, task: Task) -> tuple[float, ...]:
    if config.label_fractions is not None:
        return config.label_fractions
    return (1.0,) if config.profile == "demo" else task.label_fractions


def build_plan(config: RunConfig, registry: Registry, echo: Callable[[str], None] = print) -> Plan:
    """Every job of the run; tasks whose data is missing are left out, each with its reason."""
    methods = [make_method(registry, name, options) for name, options in config.methods.items()]
    tasks = []
    for name in config.tasks:
        task = registry.task(name)
        availability = task.availability(config.data_root)
        if availability.ok:
            tasks.append(task)
        else:
            echo(f"skipping task {name}: {availability.reason}")
    pools: dict[str, PreparedPool] = {}
    jobs = []
    for method in methods:
        for seed_index in range(config.seeds):
            for task in tasks:
                pretraining = _pretraining(method, task, seed_index, config, registry, pools)
                for fraction in label_fractions(config, task):
                    protocol = transfer_protocol(config.profile, task)
                    spec = {
                        "pretraining": pretraining.spec,
                        "variant": variant_label(method, config.encoder),
                        "task": task.name,
                        "task_version": task.version,
                        "task_plugin": registry.plugin_version(task.name),
                        "regimes": list(REGIMES),
                        "label_fraction": fraction,
                        "seed_index": seed_index,
                        "profile": config.profile,
                        "transfer": dataclasses.asdict(protocol),
                        "ssl_bench": ssl_bench.__version__,
                    }
                    jobs.append(Job(digest(spec), spec, pretraining, task, fraction, seed_index))
    return Plan(jobs)


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


class Executor:
    """Runs a plan's jobs that are not done, reusing cached pretrainings and task data."""

    def __init__(self, config: RunConfig, device: torch.device, progress: bool = True, echo=print) -> None:
        self.config, self.device, self.progress, self.echo = config, device, progress, echo
        self.config_hash = digest(config.to_toml())
        self._data: dict[str, SegmentationData] = {}
        self._refreshed: set[str] = set()

    def run(self, plan: Plan) -> list[Path]:
        results = self.config.results
        done = {job.id for job in plan.jobs if result_path(results, job.id).exists()}
        if done and self.config.overwrite == "never":
            raise ConfigError(
                f"{len(done)} of {len(plan.jobs)} results of this plan already exist in {results}. "
                "Use --overwrite missing to compute only the absent ones, or --overwrite always to redo all."
            )
        todo = plan.jobs if self.config.overwrite == "always" else [j for j in plan.jobs if j.id not in done]
        self.echo(f"{len(plan.jobs)} jobs planned, {len(plan.jobs) - len(todo)} already done, {len(todo)} to run.")
        results.mkdir(parents=True, exist_ok=True)
        write_text(results / "run-config.toml", self.config.to_toml())
        written = []
        for job in tqdm(todo, desc="jobs", unit="job", disable=not self.progress):
            written.append(self.run_job(job))
        return written

    def _task_data(self, task: Task) -> SegmentationData:
        if task.name not in self._data:
            self._data[task.name] = task.load(self.config.data_root)
        return self._data[task.name]

    def _fresh_encoder(self, pretraining: Pretraining) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(pretraining.seed)
            return create_encoder(self.config.encoder, in_chans=pretraining.channels)

    def pretrained_encoder(self, pretraining: Pretraining) -> tuple[torch.nn.Module, dict]:
        """The encoder of ``pretraining``, trained now or loaded from the cache, and its compute record."""
        encoder = self._fresh_encoder(pretraining)
        if pretraining.pool is None:
            return encoder, {}
        folder = pretrain_dir(self.config.results, pretraining.id)
        if self.config.overwrite == "always" and pretraining.id not in self._refreshed:
            shutil.rmtree(folder, ignore_errors=True)
        self._refreshed.add(pretraining.id)
        weights, record_path = folder / "encoder.pt", folder / "pretraining.json"
        if not (weights.exists() and record_path.exists()):
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
            save_torch(weights, outcome.encoder_state)
            write_json(
                record_path,
                {
                    "spec": pretraining.spec,
                    "seconds": outcome.seconds,
                    "source_images": outcome.source_images,
                    "images_per_second": outcome.images_per_second,
                    "views_per_second": outcome.images_per_second * pretraining.method.views_per_image,
                    "peak_memory_mb": memory.peak_mb,
                    "resumed_from_step": outcome.resumed_from_step,
                    "val_losses": outcome.val_losses,
                    "selected_epoch": outcome.selected_epoch,
                    "device": self.device.type,
                },
            )
            for leftover in ("state.pt", BEST_ENCODER):
                (folder / leftover).unlink(missing_ok=True)
        encoder.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        return encoder, json.loads(record_path.read_text())

    def _transfer(self, job: Job, encoder: torch.nn.Module, data) -> dict:
        """The downstream regimes of ``job``: the LD protocol, or linear probe + fine-tune for classification."""
        generator = torch.Generator().manual_seed(job.seed)
        task = job.task
        if task.kind == "classification":
            return run_classification(
                encoder,
                data,
                ClassificationProtocol(**job.spec["transfer"]),
                classes=task.classes,
                multi_label=task.multi_label,
                label_fraction=job.label_fraction,
                generator=generator,
                device=self.device,
                progress=self.progress,
            )
        return run_transfer(
            encoder,
            data,
            TransferProtocol(**job.spec["transfer"]),
            label_fraction=job.label_fraction,
            rotation_degrees=task.rotation_degrees,
            generator=generator,
            device=self.device,
            progress=self.progress,
        ).regimes

    def run_job(self, job: Job) -> Path:
        encoder, pretrain_record = self.pretrained_encoder(job.pretraining)
        data = self._task_data(job.task)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with PeakMemory(self.device) as memory:
            regimes = self._transfer(job, encoder, data)
        result = {
            "schema_version": RESULT_SCHEMA_VERSION,
            "job_id": job.id,
            "spec": job.spec,
            "method": job.pretraining.method.name,
            "variant": job.spec["variant"],
            "task": job.task.name,
            "label_fraction": job.label_fraction,
            "seed_index": job.seed_index,
            "seed": job.seed,
            "profile": self.config.profile,
            "encoder": self.config.encoder,
            "pool": job.pretraining.spec.get("pool"),
            "headline_metric": job.task.headline_metric,
            "metrics": {name: r.metrics for name, r in regimes.items()},
            "selection": {
                name: {"best_epoch": r.best_epoch, "best_val_soft_dice_loss": r.best_val_loss}
                for name, r in regimes.items()
            },
            "compute": {
                "device": self.device.type,
                "pretrain_seconds": pretrain_record.get("seconds"),
                "pretrain_images_per_second": pretrain_record.get("images_per_second"),
                "pretrain_views_per_second": pretrain_record.get("views_per_second"),
                "pretrain_source_images": pretrain_record.get("source_images"),
                "pretrain_peak_memory_mb": pretrain_record.get("peak_memory_mb"),
                "frozen_seconds": regimes["frozen"].seconds,
                "finetune_seconds": regimes["finetune"].seconds,
                "transfer_seconds": sum(r.seconds for r in regimes.values()),
                "peak_memory_mb": memory.peak_mb,
            },
            "versions": {
                **_versions(),
                "plugins": sorted({job.spec["pretraining"]["plugin"], job.spec["task_plugin"]}),
            },
            "config_hash": self.config_hash,
            "git_commit": git_commit(),
            "started": started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "unix_time": time.time(),
        }
        return write_json(result_path(self.config.results, job.id), result)
