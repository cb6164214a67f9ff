"""BYOL (Grill et al., NeurIPS 2020) on the shared encoder.

An online network predicts a momentum target network's projection of the other view, with no negatives
(lightly's BYOL projection and prediction heads, negative cosine similarity, momentum utilities and cosine
schedule).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with BYOL's
256-dimensional projection and target momentum rising from 0.996 to 1 on a cosine. Changed from BYOL:
Adam as LD, not LARS at batch 4096 with weight decay; hidden layers four times the encoder's width, not
4096.
"""

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import (
    GlobalMethod,
    MomentumModel,
    encoder_width,
    head_hidden_width,
    swapped_prediction_loss,
    two_views,
)


@dataclass(frozen=True)
class BYOLOptions:
    base_momentum: float = 0.996
    projection_dim: int = 256

    def __post_init__(self) -> None:
        require_positive(self, ("projection_dim",), "byol")
        require_fractions(self, ("base_momentum",), "byol")


class BYOLModel(MomentumModel):
    """Online encoder, projection and prediction heads; momentum copies of encoder and projection."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        hidden = head_hidden_width(encoder)
        super().__init__(encoder, BYOLProjectionHead(encoder_width(encoder), hidden, projection_dim))
        self.prediction = BYOLPredictionHead(projection_dim, hidden, projection_dim)


class BYOL(GlobalMethod):
    name = "byol"
    description = "BYOL: predict a momentum target network's projection of the other view (lightly heads)."
    Options = BYOLOptions

    def __init__(self, options: BYOLOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = NegativeCosineSimilarity()

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return BYOLModel(encoder, self.options.projection_dim)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        views = two_views(images, stage, generator)
        predictions = model.prediction(model(views))
        return swapped_prediction_loss(self.criterion, predictions, model.forward_momentum(views))

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.update_momentum(cosine_schedule(step, total_steps, self.options.base_momentum, 1.0))


@hookimpl
def ssl_bench_register_methods(register):
    register(BYOL)
