"""Pieces the global baselines share: a pooled-encoder model, two augmented views, momentum copies, schedules.

Every global baseline reads the shared encoder's deepest feature map, average-pooled to one vector per
view. Their schedules are SimCLR's: ``demo`` a few hundred images; ``paper`` LD's published budget
(Chen et al. 2021: 100 epochs x 1000 iterations, Adam 1e-3 constant, 448 px crops) at 32 source images per
step, so that the baselines train as long as LD does.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from ssl_bench.api import Method, Stage, augment


def encoder_width(encoder: nn.Module) -> int:
    """Channels of the encoder's deepest feature: the width of its pooled vector."""
    return encoder.feature_info[-1].channels


def head_hidden_width(encoder: nn.Module) -> int:
    """Hidden width of the MLP heads: four times the pooled vector, the ratio SimCLR's head also has."""
    return 4 * encoder_width(encoder)


def pooled_features(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images -> (B, channels) average of the deepest feature map."""
    return encoder(images)[-1].mean(dim=(2, 3))


class PooledHeadModel(nn.Module):
    """The shared encoder, its deepest feature average-pooled, then ``head``."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(pooled_features(self.encoder, images))


class MomentumModel(PooledHeadModel):
    """A :class:`PooledHeadModel` with momentum copies of its encoder and head, moved by EMA, not by gradient.

    The copies live under other names, so that ``model.encoder`` stays the one exported encoder.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, head_twin: nn.Module | None = None) -> None:
        """``head_twin``, a second head built as ``head``, stands in for a copy where ``head`` cannot be deep-copied
        (a weight-normalised layer); it gets ``head``'s weights."""
        super().__init__(encoder, head)
        self.momentum_encoder = frozen_copy(encoder)
        if head_twin is None:
            self.momentum_head = frozen_copy(head)
        else:
            head_twin.load_state_dict(head.state_dict())
            deactivate_requires_grad(head_twin)
            self.momentum_head = head_twin

    @torch.no_grad()
    def forward_momentum(self, images: torch.Tensor) -> torch.Tensor:
        return self.momentum_head(pooled_features(self.momentum_encoder, images))

    def update_momentum(self, momentum: float) -> None:
        """EMA step: copy <- momentum * copy + (1 - momentum) * online, for encoder and head."""
        update_momentum(self.encoder, self.momentum_encoder, momentum)
        update_momentum(self.head, self.momentum_head, momentum)


def frozen_copy(module: nn.Module) -> nn.Module:
    duplicate = copy.deepcopy(module)
    deactivate_requires_grad(duplicate)
    return duplicate


@contextmanager
def buffers_restored(module: nn.Module) -> Iterator[None]:
    """Whatever ``module``'s buffers (a loss's running centre) become within the block, they are put back after."""
    saved = [buffer.clone() for buffer in module.buffers()]
    try:
        yield
    finally:
        for buffer, value in zip(module.buffers(), saved, strict=True):
            buffer.copy_(value)


def checkpointed(bank: MemoryBankModule) -> MemoryBankModule:
    """Make a lightly memory bank part of the state dict (lightly leaves it out), so that a resumed run
    continues with the queue an unbroken run would have."""
    for name in ("bank", "bank_ptr"):
        bank.register_buffer(name, getattr(bank, name), persistent=True)
    return bank


def two_views(images: torch.Tensor, stage: Stage, generator: torch.Generator) -> torch.Tensor:
    """Two contrastive views of every image, stacked [first views; second views]: (2B, C, size, size)."""
    return torch.cat([augment.contrastive_view(images, stage.image_size, generator) for _ in range(2)])


@dataclass(frozen=True)
class Crops:
    """One kind of multi-crop view: how many per image, their area range, their size relative to the stage's."""

    count: int
    scale: tuple[float, float]
    relative_size: float


def crop_views(
    images: torch.Tensor, crops: Crops, stage_size: int, encoder: nn.Module, generator: torch.Generator
) -> torch.Tensor:
    """``crops.count`` contrastive views of every image, stacked view by view: (count x B, C, size, size), never
    smaller than the encoder's deepest stride, so that its deepest feature keeps at least one pixel."""
    size = max(round(stage_size * crops.relative_size), encoder.feature_info[-1].reduction)
    return torch.cat([augment.contrastive_view(images, size, generator, scale=crops.scale) for _ in range(crops.count)])


def swapped_prediction_loss(criterion: nn.Module, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``criterion`` of each view's prediction against the other view's target, which gets no gradient.

    Rows are stacked [first views; second views], so rolling by half a batch pairs every view with its twin.
    """
    return criterion(predictions, targets.detach().roll(len(targets) // 2, dims=0))


class GlobalMethod(Method):
    """A global baseline: the shared schedules of the module docstring."""

    def stages(self, scale: str) -> list[Stage]:
        if scale == "paper":
            return [Stage(self.name, epochs=100, steps_per_epoch=1000, batch_size=32, image_size=448, lr=1e-3)]
        return [Stage(self.name, epochs=2, steps_per_epoch=10, batch_size=16, image_size=64, lr=1e-3)]


class TwoViewMethod(GlobalMethod):
    """A global baseline whose ``criterion`` compares the projections of an image's two views, both trained."""

    criterion: nn.Module

    @abstractmethod
    def projection_head(self, input_dim: int) -> nn.Module:
        """The head on the pooled vector of ``input_dim`` channels."""

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return PooledHeadModel(encoder, self.projection_head(encoder_width(encoder)))

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        first, second = model(two_views(images, stage, generator)).chunk(2)
        return self.criterion(first, second)
