"""SwAV (Caron et al., NeurIPS 2020) on the shared encoder.

Views are softly assigned to learned prototypes under an equal-partition constraint (Sinkhorn-Knopp), and
each view must predict the assignment of the two full-resolution views from its own features (swapped
prediction), over multi-crop: two crops at the stage's size and six small ones (lightly's SwAV projection
head, prototypes, memory bank and loss).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with SwAV's
multi-crop (2 x 224 px at scale 0.14-1 and 6 x 96 px at scale 0.05-0.14, here scaled to the stage's size),
temperature 0.1, Sinkhorn epsilon 0.05 with 3 iterations, prototypes frozen for the first epoch, and a
3840-feature queue from epoch 15 for small batches (here as shares of any budget's steps: the first 1% and from
15%, as in 100 epochs). Changed from SwAV: 512 prototypes, not 3000 (medical
pools have far fewer modes than ImageNet); Adam as LD, not LARS at batch 4096.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules.heads import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import (
    Crops,
    GlobalMethod,
    PooledHeadModel,
    checkpointed,
    crop_views,
    encoder_width,
    head_hidden_width,
)

HIGH_RESOLUTION = Crops(count=2, scale=(0.14, 1.0), relative_size=1.0)
# SwAV's small crops are 96 px beside 224 px ones.
LOW_RESOLUTION = Crops(count=6, scale=(0.05, 0.14), relative_size=96 / 224)


@dataclass(frozen=True)
class SwAVOptions:
    prototypes: int = 512
    projection_dim: int = 128
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    #: the share of all steps for which the prototypes are frozen, and the share after which the queues join
    frozen_prototype_fraction: float = 0.01
    queue_length: int = 3840
    queue_start_fraction: float = 0.15

    def __post_init__(self) -> None:
        require_positive(
            self,
            ("prototypes", "projection_dim", "temperature", "sinkhorn_epsilon", "sinkhorn_iterations", "queue_length"),
            "swav",
        )
        require_fractions(self, ("frozen_prototype_fraction", "queue_start_fraction"), "swav")


class SwAVModel(PooledHeadModel):
    """Encoder, projection head, prototypes, and one queue of recent features per full-resolution crop.

    ``steps_done`` is a buffer, so that a resumed run freezes the prototypes and starts the queues when an
    unbroken one does.
    """

    def __init__(self, encoder: nn.Module, options: SwAVOptions, stage: Stage) -> None:
        width = encoder_width(encoder)
        super().__init__(encoder, SwaVProjectionHead(width, head_hidden_width(encoder), options.projection_dim))
        frozen_steps = stage.step_at(options.frozen_prototype_fraction)
        self.prototypes = SwaVPrototypes(options.projection_dim, options.prototypes, frozen_steps)
        self.prototypes.normalize()
        queue_size = (options.queue_length, options.projection_dim)
        self.queues = nn.ModuleList(
            checkpointed(MemoryBankModule(queue_size, feature_dim_first=False)) for _ in range(HIGH_RESOLUTION.count)
        )
        # The queues join the loss once they hold only real features, and not before queue_start_fraction.
        steps_to_fill = math.ceil(options.queue_length / stage.batch_size)
        self.queue_start_step = max(stage.step_at(options.queue_start_fraction), steps_to_fill)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length projections, the points that the prototypes score."""
        return F.normalize(self(images), dim=1)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return self.prototypes(features, int(self.steps_done))

    @torch.no_grad()
    def queued_scores(self, high_resolution: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Prototype scores of each queue once in use; in training, the current features join the queues."""
        queued = [
            queue(features, update=self.training)[1]
            for queue, features in zip(self.queues, high_resolution, strict=True)
        ]
        if queued[0] is None or int(self.steps_done) < self.queue_start_step:
            return None
        return [self.scores(features) for features in queued]


def _embedded_crops(
    model: SwAVModel, images: torch.Tensor, crops: Crops, stage_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """``crops.count`` crops of every image, embedded in one forward pass."""
    return list(model.embed(crop_views(images, crops, stage_size, model.encoder, generator)).chunk(crops.count))


class SwAV(GlobalMethod):
    name = "swav"
    version = "2"  # 2: prototypes frozen and queues started at shares of the steps, not at epochs of any length
    bf16_safe = True
    description = "SwAV: swapped prediction of Sinkhorn prototype assignments over multi-crop (lightly)."
    views_per_image = HIGH_RESOLUTION.count + LOW_RESOLUTION.count
    Options = SwAVOptions

    def __init__(self, options: SwAVOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = SwaVLoss(
            temperature=self.options.temperature,
            sinkhorn_iterations=self.options.sinkhorn_iterations,
            sinkhorn_epsilon=self.options.sinkhorn_epsilon,
        )

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return SwAVModel(encoder, self.options, stage)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        high = _embedded_crops(model, images, HIGH_RESOLUTION, stage.image_size, generator)
        low = _embedded_crops(model, images, LOW_RESOLUTION, stage.image_size, generator)
        loss = self.criterion(
            [model.scores(features) for features in high],
            [model.scores(features) for features in low],
            model.queued_scores(high),
        )
        return loss.squeeze(0)  # lightly returns shape (1,)

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.steps_done.fill_(step + 1)
        # SwAV keeps the prototypes on the unit sphere between steps.
        model.prototypes.normalize()


@hookimpl
def ssl_bench_register_methods(register):
    register(SwAV)
