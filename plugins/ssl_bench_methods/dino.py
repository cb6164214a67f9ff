"""DINO (Caron et al., ICCV 2021) on the shared encoder, as lightly's ResNet example composes it.

A student predicts a momentum teacher's centred, sharpened distribution over output dimensions, across
multi-crop views: the teacher sees the two global crops, the student every crop (lightly's DINO projection head,
loss with its running centre, and momentum utilities).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et al. 2021: 100
epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step. Kept from DINO: two global crops at scale
0.4-1 and six local crops at 0.05-0.4 (96 px beside 224 px, here scaled to the stage's size), student temperature 0.1
and teacher temperature 0.04 (DINO's defaults, no warm-up), centre momentum 0.9, teacher momentum rising from 0.996 to 1
on a cosine, a 256-dimensional bottleneck and a weight-normalised last layer frozen for the first epoch of 100, here the
first 1% of steps at any budget. Changed: 2048 output dimensions, not 65,536 (lightly's ResNet example; medical pools
have far fewer modes than ImageNet, as SwAV's prototypes here); hidden layers four times the encoder's width, not 2048;
Adam as LD, not SGD (ResNet) or AdamW (ViT) with weight decay.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from ssl_bench.api import Stage, hookimpl, require_fractions, require_positive
from ssl_bench_methods._global import (
    Crops,
    GlobalMethod,
    MomentumModel,
    buffers_restored,
    crop_views,
    encoder_width,
    head_hidden_width,
)

GLOBAL_CROPS = Crops(count=2, scale=(0.4, 1.0), relative_size=1.0)
LOCAL_CROPS = Crops(count=6, scale=(0.05, 0.4), relative_size=96 / 224)


@dataclass(frozen=True)
class DINOOptions:
    output_dim: int = 2048
    bottleneck_dim: int = 256
    student_temperature: float = 0.1
    teacher_temperature: float = 0.04
    center_momentum: float = 0.9
    base_momentum: float = 0.996
    #: the share of all steps for which the last layer is frozen (DINO: the first of 100 epochs)
    frozen_last_layer_fraction: float = 0.01

    def __post_init__(self) -> None:
        require_positive(self, ("output_dim", "bottleneck_dim", "student_temperature", "teacher_temperature"), "dino")
        require_fractions(self, ("center_momentum", "base_momentum", "frozen_last_layer_fraction"), "dino")


class DINOModel(MomentumModel):
    """Student encoder and head, their momentum copies (the teacher), and the loss that holds the running centre.

    ``steps_done`` is a buffer, so that a resumed run unfreezes the last layer when an unbroken one does.
    """

    def __init__(self, encoder: nn.Module, options: DINOOptions, stage: Stage) -> None:
        dims = encoder_width(encoder), head_hidden_width(encoder), options.bottleneck_dim, options.output_dim
        super().__init__(encoder, DINOProjectionHead(*dims), head_twin=DINOProjectionHead(*dims))
        # The centre is state of the model, not of the method: it is checkpointed and moves with the model.
        self.criterion = DINOLoss(
            options.output_dim,
            teacher_temp=options.teacher_temperature,
            warmup_teacher_temp=options.teacher_temperature,
            student_temp=options.student_temperature,
            center_momentum=options.center_momentum,
        )
        self.frozen_last_layer_steps = stage.step_at(options.frozen_last_layer_fraction)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def loss(self, teacher: list[torch.Tensor], student: list[torch.Tensor]) -> torch.Tensor:
        """DINO's loss; the running centre moves in training only (lightly moves it on every call)."""
        with nullcontext() if self.training else buffers_restored(self.criterion):
            return self.criterion(teacher, student)


class DINO(GlobalMethod):
    name = "dino"
    version = "2"  # 2: the last layer is frozen for a share of the steps, not for a first epoch of any length
    bf16_safe = True
    description = "DINO: a student matches a momentum teacher's centred, sharpened outputs across multi-crop (lightly)."
    views_per_image = GLOBAL_CROPS.count + LOCAL_CROPS.count
    Options = DINOOptions

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return DINOModel(encoder, self.options, stage)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        # DINO freezes the last layer at first: without a gradient, Adam leaves it as it is.
        model.head.last_layer.requires_grad_(int(model.steps_done) >= model.frozen_last_layer_steps)
        global_views = crop_views(images, GLOBAL_CROPS, stage.image_size, model.encoder, generator)
        local_views = crop_views(images, LOCAL_CROPS, stage.image_size, model.encoder, generator)
        teacher = model.forward_momentum(global_views).chunk(GLOBAL_CROPS.count)
        student = [*model(global_views).chunk(GLOBAL_CROPS.count), *model(local_views).chunk(LOCAL_CROPS.count)]
        return model.loss(list(teacher), student)

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.steps_done.fill_(step + 1)
        model.update_momentum(cosine_schedule(step, total_steps, self.options.base_momentum, 1.0))


@hookimpl
def ssl_bench_register_methods(register):
    register(DINO)
