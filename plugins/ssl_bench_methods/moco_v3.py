"""MoCo v3 (Chen, Xie & He, ICCV 2021) on the shared encoder.

Each view's prediction must pick out its twin's key, computed by a momentum copy of the encoder and projector,
among the keys of the batch: no queue (lightly's projection-head blocks and momentum utilities; the loss is
MoCo v3's own, a cross-entropy over the batch scaled by twice the temperature).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al.
2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from MoCo v3's ResNet
recipe: the 3-layer projector and 2-layer predictor with BatchNorm (the projector's last without affine
parameters) to 256 dimensions, temperature 1.0, the symmetric loss, momentum rising from 0.99 to 1 on a cosine.
Changed: hidden layers four times the encoder's width, not 4096; Adam as LD, not LARS (ResNet) or AdamW (ViT) at
batch 4096. On a ViT MoCo v3 used temperature 0.2 (``temperature`` is an option).
"""

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import ProjectionHead
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import GlobalMethod, MomentumModel, encoder_width, head_hidden_width, two_views


@dataclass(frozen=True)
class MoCoV3Options:
    temperature: float = 1.0
    base_momentum: float = 0.99
    projection_dim: int = 256

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "projection_dim"), "moco-v3")
        require_fractions(self, ("base_momentum",), "moco-v3")


def mlp(dims: list[int], last_batch_norm: bool) -> ProjectionHead:
    """MoCo v3's MLP: linear layers without bias, each but the last followed by BatchNorm and ReLU; the last by a
    BatchNorm without affine parameters where ``last_batch_norm``."""
    blocks = [(a, b, nn.BatchNorm1d(b), nn.ReLU(), False) for a, b in itertools.pairwise(dims[:-1])]
    last = nn.BatchNorm1d(dims[-1], affine=False) if last_batch_norm else None
    return ProjectionHead([*blocks, (dims[-2], dims[-1], last, None, False)])


def contrastive_loss(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's ``ctr``: each query's cross-entropy of picking its own key among the batch's (cosine / temperature),
    times 2 x temperature."""
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(queries), device=queries.device)) * 2 * temperature


class MoCoV3Model(MomentumModel):
    """Encoder and projector, their momentum copies, and the predictor on the online projections."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        hidden = head_hidden_width(encoder)
        super().__init__(encoder, mlp([encoder_width(encoder), hidden, hidden, projection_dim], last_batch_norm=True))
        self.prediction = mlp([projection_dim, hidden, projection_dim], last_batch_norm=False)


class MoCoV3(GlobalMethod):
    name = "moco-v3"
    bf16_safe = True
    description = "MoCo v3: predict a momentum encoder's key of the other view among the batch's keys (no queue)."
    Options = MoCoV3Options

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return MoCoV3Model(encoder, self.options.projection_dim)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        views = two_views(images, stage, generator)
        first, second = model.prediction(model(views)).chunk(2)
        first_keys, second_keys = model.forward_momentum(views).chunk(2)
        temperature = self.options.temperature
        return contrastive_loss(first, second_keys, temperature) + contrastive_loss(second, first_keys, temperature)

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.update_momentum(cosine_schedule(step, total_steps, self.options.base_momentum, 1.0))


@hookimpl
def ssl_bench_register_methods(register):
    register(MoCoV3)
