"""A linear map of every encoder stage's features at the input's resolution: shared by ``linear-seg`` and
``clustering``, computed without ever building the upsampled concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.api.nets import FeatureInfo

# A linear probe's usual init (MAE's): small weights, so that no stage dominates the first steps.
_INIT_STD = 0.01


class MultiScaleLinear(nn.Module):
    """A 1x1 conv on all stages' features upsampled (bilinear) to ``size`` and concatenated, ``(N, outputs, H, W)``.

    Computed as each stage's share of the conv at the stage's own resolution, upsampled, then summed: the same
    result, as the conv mixes channels pixel by pixel and upsampling mixes pixels channel by channel (both
    linearly), but the concatenation (hundreds of channels at 512 px) is never built.
    """

    def __init__(self, feature_info: list[FeatureInfo], outputs: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(info.channels, outputs, 1, bias=False) for info in feature_info)
        self.bias = nn.Parameter(torch.zeros(outputs))
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=_INIT_STD)

    def forward(self, features: list[Tensor], size: tuple[int, int]) -> Tensor:
        total = sum(
            F.interpolate(conv(feature), size=size, mode="bilinear", align_corners=False)
            for conv, feature in zip(self.convs, features, strict=True)
        )
        return total + self.bias.view(1, -1, 1, 1)
