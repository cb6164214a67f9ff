"""Provenance: the result record of a finished job, with everything needed to trust and reproduce it (the spec,
versions, git commit, configuration hash, the encoder's weight digest, where and how long it ran)."""

from __future__ import annotations

import hashlib
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import torch

import ssl_bench
from ssl_bench.errors import ConfigError, PluginError
from ssl_bench.planning import Job
from ssl_bench.protocol import Metric, Outcome, Scores
from ssl_bench.record import Compute, MetricRecord, PoolRecord, PretrainingRecord, ProtocolRecord, ResultRecord


@dataclass(frozen=True)
class JobRun:
    """How one job ran: where, its peak memory, when it started, and the digest of the encoder it was given."""

    device: torch.device
    encoder: str
    budget: str
    config_hash: str
    peak_mb: float | None
    started: str
    encoder_digest: str


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of ``module``'s parameters and buffers, by name: equal weights give equal digests on any device."""
    hasher = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def result_record(job: Job, outcome: Outcome, pretrain: PretrainingRecord | None, run: JobRun) -> ResultRecord:
    """The record of ``job``, which ``outcome`` finished; a :class:`ConfigError` if a declared metric is missing."""
    metrics = job.protocol.metrics(job.task)
    missing = {metric.name for metric in metrics} - set(outcome.scores)
    if missing:
        raise ConfigError(f"protocol {job.protocol.name} did not report {', '.join(sorted(missing))}")
    pool = job.pretraining.pool
    return ResultRecord(
        job_id=job.id,
        spec=job.spec,
        method=job.pretraining.method.name,
        variant=job.variant,
        pretrained=job.pretraining.pretrained,
        encoder=run.encoder,
        pool=PoolRecord(pool.id, pool.fingerprint) if pool else None,
        task=job.task.name,
        task_kind=job.task.kind,
        task_modality=job.task.modality,
        data_fingerprint=job.spec["data"],
        protocol=ProtocolRecord(
            name=job.protocol.name,
            label=job.protocol_label,
            version=job.protocol.version,
            settings=job.spec["protocol"]["settings"],
            frozen_encoder=job.protocol.frozen_encoder,
            continued_from=job.upstream.id if job.upstream else None,
        ),
        label_fraction=job.label_fraction,
        seed_index=job.seed_index,
        seed=job.seed,
        budget=run.budget,
        headline_metric=metrics[0].name,
        metrics={metric.name: _metric_record(metric, outcome.scores[metric.name]) for metric in metrics},
        selection=outcome.selection,
        compute=Compute(
            device=run.device.type,
            protocol_seconds=outcome.seconds,
            peak_memory_mb=run.peak_mb,
            train_images_per_second=outcome.train_images_per_second,
            torch_threads=torch.get_num_threads(),
            **_pretraining_compute(pretrain),
        ),
        versions={**_versions(), "plugins": list(job.plugins)},
        config_hash=run.config_hash,
        git_commit=git_commit(),
        started=run.started,
        finished=now(),
        unix_time=time.time(),
        encoder_digest=run.encoder_digest,
    )


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


def _metric_record(metric: Metric, scores: Scores) -> MetricRecord:
    try:
        return MetricRecord(
            higher_is_better=metric.higher_is_better,
            per_image=list(scores.per_image) if scores.per_image is not None else None,
            ids=list(scores.ids) if scores.ids is not None else None,
            value=scores.value,
            low=metric.low,
            high=metric.high,
        )
    except ValueError as error:
        raise PluginError(f"metric {metric.name}: {error}") from error
