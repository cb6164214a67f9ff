"""The contract of a pretraining method. The core owns the loop; a method supplies the pieces."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Stage:
    """One pretraining stage: its schedule. ``batch_size`` counts source images per step."""

    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    image_size: int
    lr: float

    @property
    def steps(self) -> int:
        """The stage's optimiser steps."""
        return self.epochs * self.steps_per_epoch

    def step_at(self, share: float) -> int:
        """The step by which ``share`` of the stage is done. A schedule point given as a share scales with every
        budget: a paper's "first epoch of 100" is ``step_at(0.01)``, not the first epoch of a budget that has one."""
        return round(share * self.steps)


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class Method(ABC):
    """A self-supervised pretraining method.

    The runner builds the shared encoder, then for each stage calls :meth:`build_model`,
    :meth:`configure_optimizer` and, once per step, :meth:`training_step` on a batch of source images
    (and after each epoch on the held-out ones, for a validation loss). Parameters are carried from one
    stage to the next by name. Only ``model.encoder`` is exported to downstream tasks.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: Bump on any change that alters results: cached work of other versions is never reused.
    version: ClassVar[str] = "1"
    #: Views the network sees per source image and step (reported beside source images per second).
    views_per_image: ClassVar[float] = 2
    #: Export the encoder of the final stage's epoch with the lowest held-out loss, not the last one.
    select_best_checkpoint: ClassVar[bool] = False
    #: Whether the step may run under bf16 autocast with a channels-last network, where the budget asks for it
    #: (``precision = "bf16"``): only where its loss stays within 1e-2 relative of fp32's on the same weights and
    #: views (a loss that nearly cancels, such as a negative cosine similarity, may not).
    bf16_safe: ClassVar[bool] = False
    #: The kinds of encoder it trains (``cnn``: features at several strides; ``vit``: a plain transformer, served
    #: as a feature pyramid): a run that gives it another kind is refused before any work.
    encoder_kinds: ClassVar[tuple[str, ...]] = ("cnn", "vit")
    #: A frozen dataclass; the fields that differ from their defaults name the variant. Its ``__post_init__``
    #: checks ranges and raises :class:`ssl_bench.api.ConfigError`, which the CLI reports in one line (a
    #: ValueError there would end the run with a traceback).
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: object | None = None) -> None:
        self.options = options if options is not None else self.Options()

    @abstractmethod
    def stages(self, scale: str) -> list[Stage]:
        """The schedule at ``scale``: ``demo`` (seconds on a CPU) or ``paper`` (the published one, which a budget
        with shared steps rescales); empty for no pretraining."""

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        """The trainable model of ``stage``; it must hold ``encoder`` as its ``encoder`` attribute."""
        raise NotImplementedError(f"{self.name} has stages but does not implement build_model")

    def configure_optimizer(
        self, model: nn.Module, stage: Stage
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler | None]:
        """Adam at the stage's learning rate, constant; the scheduler (if any) steps once per epoch."""
        return torch.optim.Adam(model.parameters(), lr=stage.lr), None

    def pool_extras(self, images: np.ndarray) -> np.ndarray | None:
        """Per-image data computed once per pool and cached with it (DetCon's masks, say): an array whose
        first axis indexes ``images`` (uint8 (N, C, H, W)). When not None, :meth:`training_step` gets the
        rows of each batch's source images as the keyword argument ``extras`` (a tensor on its device)."""
        return None

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        """The loss of one step. ``images`` are source images, float in [0, 1], (B, C, H, W), on the
        model's device, not normalised; draw every random number from ``generator``.

        After each epoch the core also calls it for validation, on the pool's held-out images (one in twenty,
        in batches that may be smaller than the stage's), under ``torch.no_grad()`` with the model in eval
        mode. A validation step must leave training state (a queue, a memory bank) as it is: enqueue only
        when ``model.training`` (or when the outputs carry a gradient)."""
        raise NotImplementedError(f"{self.name} has stages but does not implement training_step")

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:  # noqa: B027
        """Called after each optimiser step (momentum encoders update here); optional."""

    @property
    def variant(self) -> str:
        """``name`` plus the non-default options, e.g. ``simclr(temperature=0.2)``."""
        return variant_name(self.name, non_default_options(self.options))


def variant_name(name: str, changed: dict[str, object]) -> str:
    """``name`` plus the changed options or settings, e.g. ``simclr(temperature=0.2)``; ``name`` if none."""
    return name if not changed else f"{name}({', '.join(f'{k}={v}' for k, v in changed.items())})"


def non_default_options(options: object) -> dict[str, object]:
    """The fields of an options dataclass whose values differ from their defaults."""
    defaults = type(options)()
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if getattr(options, f.name) != getattr(defaults, f.name)
    }
