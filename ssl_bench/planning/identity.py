"""What a run is made of: jobs and pretrainings, each named by the hash of its fully resolved spec.

A job is one (pretraining, task, protocol, label fraction, seed). Its id hashes its spec, which includes a
fingerprint of the task's data as read, and its seed derives from that id. A pretraining is keyed by its own id
(method, non-default options, versions, encoder, pool fingerprint, the stages the budget gives it, seed index)
and is shared by every job that needs it. The spec is only the hash input: what the engine and the records read
are the typed fields.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

from ssl_bench.checkpoints import Checkpoint
from ssl_bench.method import Method, Stage
from ssl_bench.pools import PreparedPool
from ssl_bench.protocol import Protocol
from ssl_bench.task import ClassificationData, SegmentationData, Task

TaskData = SegmentationData | ClassificationData


def digest(spec: object) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def as_json(spec: dict) -> dict:
    """``spec`` as its JSON reads back (tuples as lists): the spec a record holds equals the one planned."""
    return json.loads(json.dumps(spec))


def seed_of(identity: str) -> int:
    return int(identity[:8], 16)


@dataclass(frozen=True)
class Pretraining:
    """One encoder to produce; without a pool (no stages) it stays at its seeded random init."""

    id: str
    spec: dict
    method: Method
    #: the architecture it trains (``vgg16_bn_tiny`` or a timm name)
    encoder: str
    #: the schedule the budget gives the method; empty for no pretraining
    stages: tuple[Stage, ...]
    #: ``fp32`` or ``bf16`` (autocast, channels-last), as the budget gives it to the method
    precision: str
    channels: int
    pool: PreparedPool | None
    #: ``name==version`` of the method's plugin.
    plugin: str
    #: The file the encoder is loaded from, for a checkpoint's row; None for a method (pretrained or random).
    checkpoint: Checkpoint | None = None

    @property
    def pretrained(self) -> bool:
        """Whether the encoder holds learnt weights: a pretraining's, or a checkpoint's (not a random init)."""
        return self.pool is not None or self.checkpoint is not None

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
    #: The leaderboard's row name (the method variant, and the encoder unless it is the default).
    variant: str
    #: The protocol's name plus the settings that differ from the budget's: ``finetune(lr=0.0001)``.
    protocol_label: str
    #: ``name==version`` of the plugins that made it: method, task and protocol.
    plugins: tuple[str, ...]
    #: The job whose selected model this one starts from (``finetune`` from ``frozen``), or None.
    upstream: Job | None = None

    @property
    def seed(self) -> int:
        """The seed of the job's random numbers (the decoder's init, batch order, augmentation): its own, or under
        common random numbers (the spec's ``seeding``) one per task, protocol and settings, label fraction and seed
        index, shared by every row, so that two rows' scores differ by their encoders alone (an exported encoder
        scored as a checkpoint row gets its row's scores exactly)."""
        if self.spec.get("seeding") != "common":
            return seed_of(self.id)
        shared = {key: self.spec[key] for key in ("task", "data", "label_fraction", "seed_index")}
        return seed_of(digest({**shared, "protocol": self.spec["protocol"]["settings"], "label": self.protocol_label}))

    @property
    def split_seed(self) -> int:
        """The seed of the labelled subset: one per task and seed index, shared by every method and protocol."""
        return seed_of(digest({"task": self.task.name, "seed_index": self.seed_index}))


@dataclass(frozen=True)
class Plan:
    """The jobs in run order (every job after the one it continues from) and each task's data, loaded once."""

    jobs: list[Job]
    data: dict[str, TaskData]
    #: Tasks left out because their plugin failed to load their data, with the error: the run says so in its exit
    #: code.
    left_out: dict[str, str] = field(default_factory=dict)

    @cached_property  # asked for every job, again and again while workers poll
    def upstream_ids(self) -> set[str]:
        """Jobs whose selected model another job starts from: their model is kept on disk."""
        return {job.upstream.id for job in self.jobs if job.upstream is not None}
