"""DenseCL (Wang et al., CVPR 2021) on the shared encoder: MoCo v2 with a dense contrastive term.

A query view passes the encoder and a key view its momentum copy. The global term contrasts the pooled
projections against a queue of past keys (lightly's NT-Xent with memory bank); the dense term contrasts
each cell of the query's projected deepest feature map with the key cell most similar in encoder features,
against a queue of past keys' pooled dense projections. Heads and momentum updates are lightly's.

Schedules. ``demo``: enough to exercise the loop. ``paper``: Wang et al. train 200 ImageNet epochs with SGD
(lr 0.3, cosine) at batch 256, queues of 65536, temperature 0.2, momentum 0.999 and dense weight 0.5; here
LD's budget (100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) with 32 source images per step, and
queues of 4096, since a queue much longer than a medical pool of a few thousand images fills with copies
of the query's own image. MoCo's shuffled BatchNorm is left out: on one device it changes nothing.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import DenseCLProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import deactivate_requires_grad, select_most_similar, update_momentum
from torch import nn

from ssl_bench.api import Method, Stage, augment, hookimpl, require_fractions, require_positive
from ssl_bench_methods._dense import two_view_stages
from ssl_bench_methods._global import checkpointed


@dataclass(frozen=True)
class DenseCLOptions:
    temperature: float = 0.2
    queue_size: int = 4096
    #: weight of the dense term; the global one gets 1 - dense_weight
    dense_weight: float = 0.5
    momentum: float = 0.999
    projection_dim: int = 128

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "queue_size", "projection_dim"), "densecl")
        require_fractions(self, ("dense_weight", "momentum"), "densecl")


class Branch(nn.Module):
    """The encoder with a global and a dense projection head: the query branch, or its momentum copy."""

    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        self.global_projection = DenseCLProjectionHead(channels, channels, projection_dim)
        self.dense_projection = DenseCLProjectionHead(channels, channels, projection_dim)

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The deepest feature map's cells (B, h*w, C), the global (B, D) and dense (B, h*w, D) projections."""
        deepest = self.encoder(views)[-1]
        cells = deepest.flatten(start_dim=2).transpose(1, 2)
        return cells, self.global_projection(deepest.mean(dim=(2, 3))), self.dense_projection(cells)


class DenseContrastiveLoss(nn.Module):
    """InfoNCE of each query cell with its matched key cell, against a queue of pooled dense keys.

    lightly's NT-Xent enqueues the keys it contrasts; DenseCL's dense queue holds one pooled key per image.
    """

    def __init__(self, temperature: float, queue_size: int, dim: int) -> None:
        super().__init__()
        self.temperature = temperature
        self.queue = checkpointed(MemoryBankModule((queue_size, dim)))

    def forward(self, queries: torch.Tensor, matched_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``queries`` (B, N, D) against ``matched_keys``, the key cells matched to them; ``keys`` (B, N', D),
        all key cells, whose per-image means join the queue after use."""
        queries = F.normalize(queries, dim=-1).flatten(end_dim=1)
        # Only training steps enqueue (as lightly's losses do): held-out scoring leaves the queue alone.
        _, negatives = self.queue(F.normalize(keys.mean(dim=1), dim=-1), update=queries.requires_grad)
        positives = (queries * F.normalize(matched_keys, dim=-1).flatten(end_dim=1)).sum(dim=1, keepdim=True)
        logits = torch.cat([positives, queries @ negatives], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


class DenseCLModel(nn.Module):
    def __init__(self, encoder: nn.Module, options: DenseCLOptions) -> None:
        super().__init__()
        self.query = Branch(encoder, options.projection_dim)
        self.key = copy.deepcopy(self.query)
        deactivate_requires_grad(self.key)
        self.global_loss = NTXentLoss(
            options.temperature, memory_bank_size=(options.queue_size, options.projection_dim)
        )
        checkpointed(self.global_loss.memory_bank)
        self.dense_loss = DenseContrastiveLoss(options.temperature, options.queue_size, options.projection_dim)

    @property
    def encoder(self) -> nn.Module:
        # A property, not a second registration: the state dict names the encoder once.
        return self.query.encoder


class DenseCL(Method):
    name = "densecl"
    bf16_safe = True
    description = "DenseCL: MoCo v2 plus dense contrast of matched feature cells (lightly heads and momentum)."
    Options = DenseCLOptions

    def stages(self, scale: str) -> list[Stage]:
        return two_view_stages(self.name, scale)

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return DenseCLModel(encoder, self.options)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        query_views = augment.contrastive_view(images, stage.image_size, generator)
        key_views = augment.contrastive_view(images, stage.image_size, generator)
        query_cells, query_global, query_dense = model.query(query_views)
        with torch.no_grad():
            key_cells, key_global, key_dense = model.key(key_views)
        matched_keys = select_most_similar(query_cells, key_cells, key_dense)
        global_term = model.global_loss(query_global, key_global)
        dense_term = model.dense_loss(query_dense, matched_keys, key_dense)
        return (1 - self.options.dense_weight) * global_term + self.options.dense_weight * dense_term

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        update_momentum(model.query, model.key, m=self.options.momentum)


@hookimpl
def ssl_bench_register_methods(register):
    register(DenseCL)
