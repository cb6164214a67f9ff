"""SimCLR (Chen et al., ICML 2020) on the shared encoder, from lightly's projection head and NT-Xent loss.

The deepest encoder feature is average-pooled and projected; two augmented views of each source
image are positives, every other view in the batch a negative.

Schedules. ``demo``: a few hundred images, enough to exercise the loop. ``paper``: LD's published
budget (Chen et al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) with 32 source images
per step, since SimCLR needs many negatives; the original SimCLR schedule (LARS, batch 4096) does not
fit medical pools of a few thousand images.
"""

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_bench.api import Method, Stage, augment, hookimpl


@dataclass(frozen=True)
class SimCLROptions:
    temperature: float = 0.5
    projection_dim: int = 128


class SimCLRModel(nn.Module):
    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        self.projection = SimCLRProjectionHead(channels, 4 * channels, projection_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        deepest = self.encoder(images)[-1]
        return self.projection(deepest.mean(dim=(2, 3)))


class SimCLR(Method):
    name = "simclr"
    description = "SimCLR: global contrastive learning of two views (lightly head and NT-Xent loss)."
    Options = SimCLROptions

    def __init__(self, options: SimCLROptions | None = None) -> None:
        super().__init__(options)
        self.criterion = NTXentLoss(temperature=self.options.temperature)

    def stages(self, profile: str) -> list[Stage]:
        if profile == "paper":
            return [Stage("simclr", epochs=100, steps_per_epoch=1000, batch_size=32, image_size=448, lr=1e-3)]
        return [Stage("simclr", epochs=2, steps_per_epoch=10, batch_size=16, image_size=64, lr=1e-3)]

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return SimCLRModel(encoder, self.options.projection_dim)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        first = augment.contrastive_view(images, stage.image_size, generator)
        second = augment.contrastive_view(images, stage.image_size, generator)
        projections = model(torch.cat([first, second]))
        return self.criterion(*projections.chunk(2))


@hookimpl
def ssl_bench_register_methods(register):
    register(SimCLR)
