"""RotNet (Gidaris, Singh & Komodakis, ICLR 2018) on the shared encoder.

Every image is shown turned by 0, 90, 180 and 270 degrees and a linear classifier on the pooled deepest
feature must tell which (4-way cross-entropy). lightly has no rotation head or loss: both are written here.

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, all four
rotations of each in the same batch as RotNet does. Changed from RotNet: Adam as LD, not SGD 0.1 with
step decay; a random resized crop of at least half the image and a horizontal flip before rotating (no
vertical flip: with the rotations it would make the labels ambiguous).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.api import Stage, augment, hookimpl
from ssl_bench_methods._global import GlobalMethod, PooledHeadModel, encoder_width

ROTATIONS = 4
CROP_SCALE = (0.5, 1.0)


def rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``images`` turned counter-clockwise by k * 90 degrees for k = 0..3, stacked by k, and the labels k."""
    turned = torch.cat([torch.rot90(images, k, dims=(-2, -1)) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(len(images))
    return turned, labels


class RotNet(GlobalMethod):
    name = "rotnet"
    bf16_safe = True
    description = "RotNet: predict which of four right-angle rotations an image shows (4-way classifier)."
    views_per_image = ROTATIONS

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return PooledHeadModel(encoder, nn.Linear(encoder_width(encoder), ROTATIONS))

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        # Square crops, so that every rotation keeps the shape.
        views = augment.random_resized_crop(images, stage.image_size, generator, scale=CROP_SCALE)
        views = augment.random_flip(views, generator, horizontal=True, vertical=False)
        turned, labels = rotations(augment.normalize(views))
        return F.cross_entropy(model(turned), labels)


@hookimpl
def ssl_bench_register_methods(register):
    register(RotNet)
