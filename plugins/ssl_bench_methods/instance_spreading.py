"""Instance spreading (Ye, Zhang, Yuen & Chang, CVPR 2019) on the shared encoder.

Whole-image embeddings of two views of each image must recognise each other and spread away from every
other image's, by Ye et al.'s batch criterion: the criterion LD applies to patches (see ld-spec.md, "Batch
criterion"), here on one L2-normalised 128-dimensional embedding per view. lightly has no such loss: LD
and this method share it from ``_criteria.py``.

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with Ye et al.'s
linear 128-dimensional embedding and temperature 0.1. Changed from Ye et al.: Adam as LD, not SGD; the
global baselines' shared views (``augment.contrastive_view``: blur and vertical flips beside their crop,
colour jitter, greyscale and horizontal flip).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_positive
from ssl_bench_methods._criteria import batch_criterion
from ssl_bench_methods._global import GlobalMethod, PooledHeadModel, encoder_width, two_views


@dataclass(frozen=True)
class InstanceSpreadingOptions:
    temperature: float = 0.1
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "embedding_dim"), "instance-spreading")


class InstanceSpreading(GlobalMethod):
    name = "instance-spreading"
    bf16_safe = True
    description = "Instance spreading: Ye et al.'s batch criterion on whole-image embeddings of two views."
    Options = InstanceSpreadingOptions

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return PooledHeadModel(encoder, nn.Linear(encoder_width(encoder), self.options.embedding_dim))

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        embeddings = F.normalize(model(two_views(images, stage, generator)), dim=1)
        return batch_criterion(embeddings, self.options.temperature)


@hookimpl
def ssl_bench_register_methods(register):
    register(InstanceSpreading)
