"""How much compute a run gives every method and protocol: its budget.

A budget starts from a scale of schedules: ``demo`` (each method's and protocol's tiny ones, seconds on a CPU) or
``paper`` (the published ones). A budget with ``steps`` gives every method the same pretraining: that many optimiser
steps of ``images_per_step`` source images, each method's paper stages rescaled to it (a stage keeps its share of
the steps and its learning rate; ``image_size`` is the size of the method's largest stage, the others keep their
ratio to it). ``downstream_epochs`` replaces the supervised protocols' epochs and ``downstream_image_size`` caps
every protocol's input size. Built in: ``demo``, ``paper`` and ``matched`` (LD's published pretraining budget for
every method); a run file's ``[budget]`` table changes any field of one of them (``based_on``, ``paper`` by
default).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass

from ssl_bench.errors import ConfigError
from ssl_bench.method import Method, Stage, variant_name

#: The schedules a budget starts from: each method's ``stages(scale)`` and each protocol's settings at that scale.
SCALES = ("demo", "paper")
#: ``bf16``: pretraining steps under bf16 autocast, the network channels-last, for methods that are
#: :attr:`~ssl_bench.method.Method.bf16_safe` (about twice as fast on a CPU with AVX512-BF16 or on a GPU).
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Budget:
    """One budget (see the module's docstring); ``None`` leaves a quantity to the scale's own schedules."""

    name: str
    scale: str = "paper"
    #: optimiser steps per pretraining, shared by every method
    steps: int | None = None
    #: source images per step (``Stage.batch_size``); None: each stage's own
    images_per_step: int | None = None
    #: pretraining image size of each method's largest stage; None: each stage's own
    image_size: int | None = None
    #: steps between two held-out losses (an epoch); a stage shorter than this is one epoch
    steps_per_epoch: int = 1000
    #: epochs of the supervised protocols (the frozen phase and fine-tuning alike); None: the scale's
    downstream_epochs: int | None = None
    #: the largest input size of any downstream protocol (a smaller one, MedMNIST's 64 px, stays); None: the
    #: scale's (LD's 512 px for segmentation)
    downstream_image_size: int | None = None
    #: the pretraining step's precision (see :data:`PRECISIONS`)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"budget {self.name!r}: scale must be one of {', '.join(SCALES)}; got {self.scale!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"budget {self.name!r}: precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}."
            )
        least = {"steps": 1, "images_per_step": 1, "image_size": 16, "steps_per_epoch": 1}
        least |= {"downstream_epochs": 1, "downstream_image_size": 16}
        for key, minimum in least.items():
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ConfigError(f"{key} of budget {self.name!r} must be a whole number >= {minimum}; got {value!r}.")
        if self.steps is None and (self.images_per_step is not None or self.image_size is not None):
            raise ConfigError(
                f"budget {self.name!r} sets images_per_step or image_size without steps: a shared pretraining "
                "budget needs its steps too, e.g. steps = 2000"
            )

    def precision_of(self, method: Method) -> str:
        """The precision ``method`` pretrains in: the budget's, where the method is safe in it."""
        return self.precision if method.bf16_safe else "fp32"

    def stages(self, method: Method) -> tuple[Stage, ...]:
        """The stages ``method`` runs under this budget; empty for a method without pretraining."""
        if self.steps is None:
            return tuple(method.stages(self.scale))
        paper = method.stages("paper")
        if not paper:
            return ()
        # Rounded on the running total, so that the stages' steps add up to the budget's exactly.
        ends = list(itertools.accumulate(stage.steps for stage in paper))
        bounds = [0, *(round(end / ends[-1] * self.steps) for end in ends)]
        largest = max(stage.image_size for stage in paper)
        return tuple(self._rescaled(stage, max(1, bounds[i + 1] - bounds[i]), largest) for i, stage in enumerate(paper))

    def _rescaled(self, stage: Stage, steps: int, largest: int) -> Stage:
        # Epochs of about steps_per_epoch steps that divide the stage's steps exactly (a tie: the shorter epochs).
        target = steps / self.steps_per_epoch
        divisors = {d for n in range(1, math.isqrt(steps) + 1) if steps % n == 0 for d in (n, steps // n)}
        epochs = min(divisors, key=lambda n: (abs(n - target), -n))
        size = stage.image_size if self.image_size is None else round(stage.image_size * self.image_size / largest)
        return dataclasses.replace(
            stage,
            epochs=epochs,
            steps_per_epoch=steps // epochs,
            batch_size=self.images_per_step or stage.batch_size,
            image_size=size,
        )


#: LD's published pretraining: 20 + 80 epochs x 1000 steps of 4 samples x 2 source images.
MATCHED = Budget("matched", steps=100_000, images_per_step=8)
BUILT_IN = {budget.name: budget for budget in (Budget("demo", scale="demo"), Budget("paper"), MATCHED)}


def resolve_budget(value: object) -> Budget:
    """A built-in budget's name, or a ``[budget]`` table: ``based_on`` a built-in (``paper`` if absent) with
    any field changed; a table without ``name`` is named by what it changes, e.g. ``paper(steps=2000)``."""
    if isinstance(value, str):
        if value not in BUILT_IN:
            raise ConfigError(
                f"budget must be one of {', '.join(BUILT_IN)} or a [budget] table (steps, images_per_step, "
                f"image_size, ...); got {value!r}."
            )
        return BUILT_IN[value]
    if not isinstance(value, dict):
        raise ConfigError(f'budget must be a name, e.g. budget = "matched", or a [budget] table; got {value!r}.')
    table = dict(value)
    base = resolve_budget(table.pop("based_on", "paper"))
    name = table.pop("name", None)
    fields = {f.name for f in dataclasses.fields(Budget)} - {"name"}
    if unknown := sorted(set(table) - fields):
        known = ", ".join(["name", "based_on", *sorted(fields)])
        raise ConfigError(f"[budget] has no field {', '.join(unknown)}; its fields: {known}.")
    changed = {key: item for key, item in table.items() if item != getattr(base, key)}
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise ConfigError(f'name of [budget] must be a non-empty string, e.g. name = "cpu-2k"; got {name!r}.')
    budget = dataclasses.replace(base, name=name or variant_name(base.name, changed), **table)
    if budget.name in BUILT_IN and budget != BUILT_IN[budget.name]:
        raise ConfigError(
            f"[budget] is named {budget.name!r}, as a built-in budget it differs from: name it otherwise."
        )
    return budget
