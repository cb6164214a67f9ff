"""Stand-ins that protocol tests share: an encoder whose features are noise, a seeded context, mean Dice."""

from __future__ import annotations

import torch

from ssl_bench.api import Context, Encoder, SegmentationData, Task
from ssl_bench.api.nets import FeatureInfo

CPU = torch.device("cpu")


class NoiseEncoder(Encoder):
    """``channels`` features of fresh noise at full resolution on every call, from a fixed seed: they say nothing
    about the image, and a fresh encoder gives the same features again."""

    in_chans = 3

    def __init__(self, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.channels = channels
        self.feature_info = [FeatureInfo(channels, 1)]
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.randn(len(x), self.channels, *x.shape[-2:], generator=self.generator)]


def seeded_context(
    encoder: Encoder, data: SegmentationData, task: Task, settings: object, seed: int = 0, **fields
) -> Context:
    """A protocol's context on the CPU at label fraction 1, its generator seeded with ``seed``; ``fields`` set
    the rest (``pretrained`` defaults to True)."""
    fields.setdefault("pretrained", True)
    generator = torch.Generator().manual_seed(seed)
    return Context(
        encoder=encoder,
        data=data,
        task=task,
        settings=settings,
        label_fraction=1.0,
        generator=generator,
        device=CPU,
        **fields,
    )


def mean_dice(outcome) -> float:
    values = outcome.scores["dice"].per_image
    return sum(values) / len(values)
