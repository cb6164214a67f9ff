"""The contract of a downstream protocol: how a pretrained encoder is trained, selected and scored on a task.

A protocol serves some task kinds (``segmentation``, ``classification``), has settings per budget (a frozen
dataclass: values that differ from the budget's name the variant, as method options do), and reports metrics,
the first of which is its headline. A protocol may continue from another one's selected model (LD's
``finetune`` starts from ``frozen``'s best checkpoint): the runner runs that job first and keeps its model.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import ClassVar

import torch

from ssl_bench.budget import Budget
from ssl_bench.models import Encoder
from ssl_bench.task import ClassificationData, SegmentationData, Task


@dataclass(frozen=True)
class Metric:
    """A metric a protocol reports. ``higher_is_better`` decides ranks, bold cells and significance signs; a value
    outside ``low``..``high`` (None: unbounded) is refused when the record is written and when it is read."""

    name: str
    higher_is_better: bool = True
    description: str = ""
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Scores:
    """One metric's test scores: per image (in ``ids`` order), or one set-level ``value``."""

    per_image: tuple[float, ...] | None = None
    ids: tuple[str, ...] | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if (self.per_image is None) == (self.value is None):
            raise ValueError("Scores hold either per_image scores or a set-level value, not both or neither")
        if self.per_image is not None and (self.ids is None or len(self.ids) != len(self.per_image)):
            raise ValueError("per-image scores need one image id each")


@dataclass(frozen=True)
class Selection:
    """How the scored model was chosen: the epoch (from 1) with the lowest validation loss, and that loss."""

    epoch: int | None
    val_loss: float | None
    val_loss_name: str


@dataclass(frozen=True)
class Outcome:
    """What one protocol run produced. ``state`` is the selected model, kept for protocols that continue."""

    scores: dict[str, Scores]
    selection: Selection
    seconds: float
    train_images_per_second: float | None = None
    state: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Context:
    """Everything a protocol run gets. Every random number must come from ``generator``.

    ``pretrained`` is False for a method without pretraining (``scratch``): its encoder is a random init.
    ``start`` is the selected model state of the protocol this one continues from, else None. ``workdir`` is
    this job's own folder, for checkpoints that let an interrupted job resume (None: no checkpoints).
    ``shapes``, for a protocol that :attr:`~Protocol.uses_shapes`, is the task's shape prior: the training masks
    ``bool (M, H, W)`` of its :attr:`~ssl_bench.task.Task.shape_source`; else None. ``split_seed`` draws the
    labelled subset (:attr:`subset_seed`); the runner derives it from the task and seed index, not from the job,
    so that every method and protocol at one seed index labels the same images: a protocol that continues from
    another trains on no other labels, and validates on none that the other trained on.
    """

    encoder: Encoder
    data: SegmentationData | ClassificationData
    task: Task
    settings: object
    label_fraction: float
    generator: torch.Generator
    device: torch.device
    pretrained: bool
    start: dict[str, torch.Tensor] | None = None
    progress: bool = False
    workdir: Path | None = None
    shapes: torch.Tensor | None = None
    split_seed: int = 0

    @property
    def subset_seed(self) -> int | None:
        """The seed of the labelled subset, or None where the task keeps its released order (``ordered_split``)."""
        return None if self.task.ordered_split else self.split_seed


class Protocol(ABC):
    """A downstream protocol. Register the class with ``ssl_bench_register_protocols``."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: The task kinds this protocol serves.
    task_kinds: ClassVar[tuple[str, ...]] = ("segmentation",)
    #: Whether the encoder stays frozen (a random encoder then says nothing about pretraining but is a baseline).
    frozen_encoder: ClassVar[bool] = True
    #: Bump on any change that alters results: cached jobs of other versions are never reused.
    version: ClassVar[str] = "1"
    #: Whether the protocol needs its task's shape prior (:attr:`Context.shapes`): it then serves only tasks that
    #: name a :attr:`~ssl_bench.task.Task.shape_source`, and its jobs' ids hash that source's data.
    uses_shapes: ClassVar[bool] = False
    #: Whether runs that name no protocols (``--all``) include this one; False for an experimental protocol whose
    #: scores are not yet evidence (it still runs when named with ``-p``).
    default_run: ClassVar[bool] = True
    #: False for a protocol whose scores mean nothing at the ``demo`` scale (a few epochs on a few images): runs at
    #: that scale that name no protocols leave it out, and say how to run it.
    signal_at_demo_scale: ClassVar[bool] = True

    @abstractmethod
    def settings(self, budget: Budget, task: Task) -> object:
        """The settings (a frozen dataclass instance) under ``budget`` for ``task``: the schedules of its ``scale``
        (``demo`` or ``paper``), with its downstream epochs and image size where it sets them."""

    @abstractmethod
    def metrics(self, task: Task) -> tuple[Metric, ...]:
        """The metrics reported on ``task``; the first is the headline."""

    def continues_from(self, task: Task, pretrained: bool) -> str | None:
        """The protocol whose selected model this one starts from on ``task``, or None."""
        return None

    @abstractmethod
    def run(self, context: Context) -> Outcome:
        """Train, select on validation data only, and score on the test split."""

    def serves(self, task: Task) -> bool:
        return task.kind in self.task_kinds and (task.shape_source is not None or not self.uses_shapes)


class FrozenFeatureProtocol(Protocol):
    """A protocol that reads a pretrained encoder's features and never trains it (clustering, landmarks,
    shape-guided): :meth:`score` gets a frozen copy of the encoder on the run's device, and :meth:`run` times it."""

    def run(self, context: Context) -> Outcome:
        start = perf_counter()
        encoder = copy.deepcopy(context.encoder).to(context.device).eval().requires_grad_(False)
        outcome = self.score(encoder, context)
        return dataclasses.replace(outcome, seconds=perf_counter() - start)

    @abstractmethod
    def score(self, encoder: Encoder, context: Context) -> Outcome:
        """Score on the test split from the frozen ``encoder`` and say how the scored model was chosen; the
        outcome's ``seconds`` is replaced by :meth:`run`'s timing (pass 0)."""


def changed_settings(settings: object, base: object) -> dict[str, object]:
    """The fields of ``settings`` that differ from ``base`` (the budget's): they name the variant."""
    return {
        f.name: getattr(settings, f.name)
        for f in dataclasses.fields(settings)
        if getattr(settings, f.name) != getattr(base, f.name)
    }
