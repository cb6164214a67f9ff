"""VICRegL (Bardes et al., NeurIPS 2022) on the shared encoder, from lightly's heads and VICRegL loss.

VICReg's variance-invariance-covariance criterion on the pooled deepest feature (global) and on the
cells of the deepest feature map (local), where each cell is matched to its nearest cells of the other
view both in feature space and by location in the source image, known from the views' geometry.

Schedules. ``demo``: enough to exercise the loop. ``paper``: Bardes et al. train 300 ImageNet epochs with
LARS at batch 2048 on 2 global (224 px) and 6 local (96 px) crops, 8192-wide projectors, alpha 0.75 and
(20, 4) matches; here LD's budget (100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) with 32 source
images per step, since the variance and covariance terms are batch statistics. Changed: the two global
views only (every method sees two views per image), and narrower projectors for the small encoder: 2048
wide globally, as the VICReg plugin's, so that the two differ by the local term only, and 128 locally.
"""

from dataclasses import dataclass

import torch
from lightly.loss import VICRegLLoss
from lightly.models.modules.heads import VicRegLLocalProjectionHead, VICRegProjectionHead
from torch import nn

from ssl_bench.api import Method, Stage, hookimpl
from ssl_bench_methods._dense import dense_view, two_view_stages


@dataclass(frozen=True)
class VICRegLOptions:
    #: weight of the global criterion; the local one gets 1 - alpha
    alpha: float = 0.75
    global_dim: int = 2048
    local_dim: int = 128


class VICRegLModel(nn.Module):
    def __init__(self, encoder: nn.Module, global_dim: int, local_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        self.global_projection = VICRegProjectionHead(channels, global_dim, global_dim)
        self.local_projection = VicRegLLocalProjectionHead(channels, local_dim, local_dim)

    def forward(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (B, D) and local (B, h, w, D') projections of the deepest feature map."""
        deepest = self.encoder(views)[-1]
        return self.global_projection(deepest.mean(dim=(2, 3))), self.local_projection(deepest.permute(0, 2, 3, 1))


class VICRegL(Method):
    name = "vicregl"
    bf16_safe = True
    description = "VICRegL: VICReg on global and location-matched local features (lightly heads and loss)."
    Options = VICRegLOptions

    def __init__(self, options: VICRegLOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = VICRegLLoss(alpha=self.options.alpha)

    def stages(self, scale: str) -> list[Stage]:
        return two_view_stages(self.name, scale)

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return VICRegLModel(encoder, self.options.global_dim, self.options.local_dim)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        features, grids = [], []
        for _ in range(2):
            views, geometry = dense_view(images, stage.image_size, generator)
            global_projection, local_projection = model(views)
            features.append((global_projection, local_projection))
            grids.append(geometry.source_grid(*local_projection.shape[1:3], like=local_projection))
        # lightly returns a one-element tensor; the loop wants a scalar.
        return self.criterion(global_view_features=features, global_view_grids=grids).squeeze()


@hookimpl
def ssl_bench_register_methods(register):
    register(VICRegL)
