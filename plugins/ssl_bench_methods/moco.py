"""MoCo v2 (Chen, Fan, Girshick & He, arXiv:2003.04297, 2020) on the shared encoder.

The query of one view must pick the key of the other view, computed by a momentum copy of the encoder
and head, out of a queue of earlier keys (lightly's MoCo projection head, NT-Xent loss with a memory bank,
and momentum utilities).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with MoCo v2's
temperature 0.2, momentum 0.999 and 2-layer MLP head to 128 dimensions. Changed from MoCo v2: a queue of
4096 keys, not 65,536, so that at 32 images per step its keys are as few steps old as MoCo's at 256
(128 vs 256 steps); Adam as LD, not SGD 0.03 with cosine decay; no shuffled batch norm, which needs
several devices.
"""

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import MoCoProjectionHead
from torch import nn

from ssl_bench.api import Stage, augment, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import GlobalMethod, MomentumModel, checkpointed, encoder_width, head_hidden_width


@dataclass(frozen=True)
class MoCoOptions:
    temperature: float = 0.2
    momentum: float = 0.999
    queue_size: int = 4096
    projection_dim: int = 128

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "queue_size", "projection_dim"), "moco")
        require_fractions(self, ("momentum",), "moco")


class MoCoModel(MomentumModel):
    """Query encoder and head, their momentum copies, and the contrastive loss that holds the key queue."""

    def __init__(self, encoder: nn.Module, options: MoCoOptions) -> None:
        head = MoCoProjectionHead(encoder_width(encoder), head_hidden_width(encoder), options.projection_dim)
        super().__init__(encoder, head)
        # The queue is state of the model, not of the method: it is checkpointed and moves with the model.
        self.criterion = NTXentLoss(options.temperature, memory_bank_size=(options.queue_size, options.projection_dim))
        checkpointed(self.criterion.memory_bank)


class MoCo(GlobalMethod):
    name = "moco"
    bf16_safe = True
    description = "MoCo v2: a momentum encoder's keys and a queue of negatives (lightly head and loss)."
    Options = MoCoOptions

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return MoCoModel(encoder, self.options)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        queries = model(augment.contrastive_view(images, stage.image_size, generator))
        keys = model.forward_momentum(augment.contrastive_view(images, stage.image_size, generator))
        # lightly enqueues the keys only when the queries carry a gradient: validation leaves the queue as it is.
        return model.criterion(queries, keys)

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.update_momentum(self.options.momentum)


@hookimpl
def ssl_bench_register_methods(register):
    register(MoCo)
