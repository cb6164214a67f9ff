"""SimSiam (Chen & He, CVPR 2021) on the shared encoder.

Each view's prediction must match the other view's projection, which gets no gradient; there are neither
negatives nor a momentum encoder (lightly's SimSiam projection and prediction heads, negative cosine
similarity).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with SimSiam's
3-layer 2048-dimensional projector and 2-layer predictor with a 4x bottleneck (512). Changed from
SimSiam: Adam as LD, not SGD 0.05 x batch/256 with cosine decay and a fixed predictor learning rate.
"""

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_positive
from ssl_bench_methods._global import GlobalMethod, PooledHeadModel, encoder_width, swapped_prediction_loss, two_views


@dataclass(frozen=True)
class SimSiamOptions:
    projection_dim: int = 2048

    def __post_init__(self) -> None:
        require_positive(self, ("projection_dim",), "simsiam")


class SimSiamModel(PooledHeadModel):
    """Encoder, projection and prediction heads."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__(encoder, SimSiamProjectionHead(encoder_width(encoder), projection_dim, projection_dim))
        self.prediction = SimSiamPredictionHead(projection_dim, projection_dim // 4, projection_dim)


class SimSiam(GlobalMethod):
    name = "simsiam"
    description = "SimSiam: predict the other view's projection under a stop-gradient (lightly heads)."
    Options = SimSiamOptions

    def __init__(self, options: SimSiamOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = NegativeCosineSimilarity()

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return SimSiamModel(encoder, self.options.projection_dim)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        projections = model(two_views(images, stage, generator))
        return swapped_prediction_loss(self.criterion, model.prediction(projections), projections)


@hookimpl
def ssl_bench_register_methods(register):
    register(SimSiam)
