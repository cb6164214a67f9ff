"""The records: one typed file per finished job, pretraining or failure, written and read here and nowhere else.

``runs/<job_id>/result.json`` holds a :class:`ResultRecord` as JSON; ``runs/<job_id>/error.json`` a
:class:`FailureRecord` of a job that failed; ``cache/pretrain/<id>/pretraining.json`` a
:class:`PretrainingRecord`. :func:`read_record` validates every field's type on the way back, so that a
truncated, hand-edited or older file is refused with its path and a fix, never half-read. Files of another
``schema_version`` are refused, not migrated: their jobs have other ids under this version and are simply run
again.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_bench.errors import DataError
from ssl_bench.protocol import Selection
from ssl_bench.results import write_json

SCHEMA_VERSION = 3  # 3: "profile" became "budget" (its name)


@dataclass(frozen=True)
class MetricRecord:
    """One metric's test scores: ``per_image`` with ``ids`` (for image-level intervals), or a set-level ``value``."""

    higher_is_better: bool
    per_image: list[float | None] | None = None
    ids: list[str] | None = None
    value: float | None = None
    #: The declared range of the metric's values (None: unbounded); a value outside it makes the record invalid.
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if (self.per_image is None) == (self.value is None):
            raise ValueError("a metric holds either per_image scores or a set-level value, not both or neither")
        if self.per_image is not None and (
            not self.per_image or self.ids is None or len(self.ids) != len(self.per_image)
        ):
            raise ValueError("per_image scores must be non-empty, with one image id each")
        values = self.per_image if self.per_image is not None else [self.value]
        outside = [v for v in values if v is not None and not self._within(v)]
        if outside:
            raise ValueError(
                f"{len(outside)} value(s) outside the metric's declared range [{self.low}, {self.high}], "
                f"e.g. {outside[0]}"
            )

    def _within(self, value: float) -> bool:
        """NaN (a score that is undefined for this image) lies in every range."""
        below = self.low is not None and value < self.low
        return not (below or (self.high is not None and value > self.high))


@dataclass(frozen=True)
class PoolRecord:
    """The pretraining pool: its id and the fingerprint of its content."""

    id: str
    fingerprint: str


@dataclass(frozen=True)
class ProtocolRecord:
    """The protocol as run: ``label`` is its name plus the settings that differ from the budget's."""

    name: str
    label: str
    version: str
    settings: dict[str, Any]
    frozen_encoder: bool
    #: The job whose selected model this one started from, if any.
    continued_from: str | None = None


@dataclass(frozen=True)
class Compute:
    """Where and how long: the pretraining (shared by every job that uses it) and this job's protocol run."""

    device: str
    protocol_seconds: float
    peak_memory_mb: float | None = None
    train_images_per_second: float | None = None
    pretrain_seconds: float | None = None
    pretrain_images_per_second: float | None = None
    pretrain_views_per_second: float | None = None
    pretrain_source_images: int | None = None
    pretrain_peak_memory_mb: float | None = None
    #: torch's CPU threads: on the CPU the float sums' order, and so the last digits of every result, depend on it
    torch_threads: int | None = None
    pretrain_torch_threads: int | None = None


@dataclass(frozen=True)
class ResultRecord:
    """A finished job: what ran (spec, method, task, protocol, data), what it scored, and what it cost."""

    job_id: str
    spec: dict[str, Any]
    method: str
    variant: str
    #: False for a method without pretraining: its encoder is a random init.
    pretrained: bool
    encoder: str
    pool: PoolRecord | None
    task: str
    task_kind: str
    task_modality: str
    data_fingerprint: str
    protocol: ProtocolRecord
    label_fraction: float
    seed_index: int
    seed: int
    budget: str
    headline_metric: str
    metrics: dict[str, MetricRecord]
    selection: Selection
    compute: Compute
    versions: dict[str, Any]
    config_hash: str
    git_commit: str | None
    started: str
    finished: str
    unix_time: float
    #: sha256 of the encoder's weights as the protocol received them: seeds that share it share one encoder (a
    #: checkpoint), so their spread is the head's alone and they count as one draw of an encoder in claims.
    encoder_digest: str | None = None
    schema_version: int = field(default=SCHEMA_VERSION)

    def __post_init__(self) -> None:
        if self.headline_metric not in self.metrics:
            raise ValueError(f"headline metric {self.headline_metric!r} is not among {sorted(self.metrics)}")


@dataclass(frozen=True)
class PretrainingRecord:
    """A finished pretraining (``cache/pretrain/<id>/pretraining.json``, beside its ``encoder.pt``): what was
    trained and what it cost. Written after the weights, so a readable record marks a finished pretraining."""

    spec: dict[str, Any]
    seconds: float
    source_images: int
    images_per_second: float
    views_per_second: float
    peak_memory_mb: float | None
    #: steps that an earlier, interrupted process had already done (0 for an unbroken run)
    resumed_from_step: int
    #: the loss on the held-out pool images after each epoch (None where the pool holds none out)
    val_losses: list[float | None]
    #: the final stage's epoch (from 1) whose encoder was kept, where the method selects one
    selected_epoch: int | None
    device: str
    torch_threads: int
    schema_version: int = field(default=SCHEMA_VERSION)


@dataclass(frozen=True)
class FailureRecord:
    """A job that failed (``runs/<job_id>/error.json``): what it was, in which phase, why, and where."""

    job_id: str
    variant: str
    task: str
    protocol: str
    label_fraction: float
    seed_index: int
    budget: str
    #: ``pretraining``, ``protocol``, or ``upstream`` (the job it continues from failed)
    phase: str
    error: str
    traceback: str
    spec: dict[str, Any]
    host: str
    pid: int
    unix_time: float
    schema_version: int = field(default=SCHEMA_VERSION)

    @property
    def summary(self) -> str:
        """The error's first line."""
        return self.error.splitlines()[0] if self.error else ""


def write_record(path: Path, record: ResultRecord | FailureRecord | PretrainingRecord) -> Path:
    """Write ``record`` atomically as JSON."""
    return write_json(path, dataclasses.asdict(record))


def read_failure(path: Path) -> FailureRecord:
    """The failure record in ``path``, every field checked; :class:`DataError` otherwise."""
    return read_record(path, FailureRecord)


#: The schema a file without ``schema_version`` has: ``pretraining.json`` was written with these same fields, untyped
#: and unversioned, before it became a record; those cached encoders stay valid.
_UNVERSIONED = {PretrainingRecord: SCHEMA_VERSION}


class UnreadableRecord(DataError):
    """A record file that cannot be read or fails its checks; ``problem`` says what, without the fix."""

    def __init__(self, path: Path, problem: str) -> None:
        self.problem = f"result file {path} {problem}"
        fix = f"delete {path.parent} and rerun the benchmark (`--overwrite missing` recomputes it)"
        super().__init__(f"{self.problem}; {fix}")


def read_record(path: Path, kind: type = ResultRecord) -> Any:
    """The record in ``path``, every field checked; :class:`UnreadableRecord` naming the file and the fix otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableRecord(path, f"is unreadable or corrupt ({error})") from error
    version = data.get("schema_version", _UNVERSIONED.get(kind)) if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UnreadableRecord(
            path,
            f"has schema_version {version!r}, this ssl-bench reads {SCHEMA_VERSION}; its job is run again under this "
            "version's id",
        )
    try:
        return _build(kind, data, "")
    except (TypeError, ValueError) as error:
        raise UnreadableRecord(path, f"is invalid: {error}") from error


def _build(kind: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``kind``, checked recursively; TypeError/ValueError name the field."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        return _build(inner, value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise TypeError(f"{where or 'the record'} must be an object")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind)}
        missing = [name for name, f in fields.items() if name not in value and _required(f)]
        if missing:
            raise ValueError(f"{where or 'the record'} lacks {', '.join(missing)}")
        if unknown := sorted(set(value) - set(fields)):
            raise ValueError(f"{where or 'the record'} has unknown field(s) {', '.join(unknown)}")
        known = {
            name: _build(hints[name], value[name], f"{where}.{name}".lstrip(".")) for name in fields if name in value
        }
        try:
            return kind(**known)
        except ValueError as error:
            raise ValueError(f"{where or 'the record'}: {error}") from error
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} must be an object")
        return {str(k): _build(arguments[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"{where} must be a list")
        return [_build(arguments[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    return _scalar(kind, value, where)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _scalar(kind: Any, value: Any, where: str) -> Any:
    if kind is Any:
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise TypeError(f"{where} must be {kind.__name__}, got {value!r:.60}")
