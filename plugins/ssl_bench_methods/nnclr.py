"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet & Zisserman, ICCV 2021) on the shared encoder.

SimCLR with a nearest neighbour as the positive: each view's projection is replaced by its nearest neighbour
(cosine) in a support set of earlier projections, which must pick out the other view's prediction among the
batch (lightly's NNCLR projection and prediction heads, nearest-neighbour memory bank and NT-Xent loss).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al.
2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from NNCLR: the
3-layer projection head with BatchNorm to 256 dimensions, the 2-layer prediction head, temperature 0.1, the
symmetric loss, neighbours looked up before the batch's first views join the support set. Changed: a support set of 4096
projections, not 98,304, so that at 32 images per step its entries are as few steps old as MoCo's queue here
(128 steps; NNCLR's 98,304 at batch 4096 are 24 steps old); hidden layers four times the encoder's width, not
2048 and 4096; Adam as LD, not LARS at batch 4096.
"""

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import NNCLRPredictionHead, NNCLRProjectionHead
from lightly.models.modules.nn_memory_bank import NNMemoryBankModule
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_positive
from ssl_bench_methods._global import (
    GlobalMethod,
    PooledHeadModel,
    checkpointed,
    encoder_width,
    head_hidden_width,
    two_views,
)


@dataclass(frozen=True)
class NNCLROptions:
    temperature: float = 0.1
    support_set_size: int = 4096
    projection_dim: int = 256

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "support_set_size", "projection_dim"), "nnclr")


class NNCLRModel(PooledHeadModel):
    """Encoder and projection head, the prediction head on the projections, and the support set."""

    def __init__(self, encoder: nn.Module, options: NNCLROptions) -> None:
        hidden = head_hidden_width(encoder)
        super().__init__(encoder, NNCLRProjectionHead(encoder_width(encoder), hidden, options.projection_dim))
        self.prediction = NNCLRPredictionHead(options.projection_dim, hidden, options.projection_dim)
        # State of the model, not of the method: it is checkpointed and moves with the model.
        self.support_set = checkpointed(NNMemoryBankModule(size=(options.support_set_size, options.projection_dim)))


class NNCLR(GlobalMethod):
    name = "nnclr"
    description = "NNCLR: a view's nearest neighbour in a support set must pick out the other view (lightly)."
    Options = NNCLROptions

    def __init__(self, options: NNCLROptions | None = None) -> None:
        super().__init__(options)
        self.criterion = NTXentLoss(temperature=self.options.temperature)

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return NNCLRModel(encoder, self.options)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        projections = model(two_views(images, stage, generator))
        predicted_first, predicted_second = model.prediction(projections).chunk(2)
        # Both views' neighbours among earlier batches' projections (a view must not find its own twin); then,
        # in training only, the first views join the support set, as NNCLR's pseudo-code adds one view.
        first, second = projections.detach().chunk(2)
        second_neighbours = model.support_set(second, update=False)
        first_neighbours = model.support_set(first, update=model.training)
        return (
            self.criterion(first_neighbours, predicted_second) + self.criterion(second_neighbours, predicted_first)
        ) / 2


@hookimpl
def ssl_bench_register_methods(register):
    register(NNCLR)
