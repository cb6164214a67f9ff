"""Pieces iBOT and the DINOv2-style method share: self-distillation of the class token across multi-crop views
(DINO's loss) and of the hidden patch tokens of block-masked global views (iBOT's loss), on a ViT encoder.

The student is the encoder's ViT behind lightly's masking wrapper, so hidden patches enter as a learned mask token;
the teacher is a momentum copy that sees the whole views. One head serves the class and the patch tokens.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import MaskedVisionTransformerTIMM
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, linear_warmup_schedule
from torch import Tensor, nn

from ssl_bench.api import ConfigError, Stage, augment, require_fractions, require_positive
from ssl_bench_methods._global import (
    Crops,
    GlobalMethod,
    buffers_restored,
    crop_views,
    frozen_copy,
    head_hidden_width,
)

#: BEiT's block masks, as iBOT and DINOv2 draw them: rectangles of at least this many patches, aspect 0.3 to 1 / 0.3,
#: up to this many tries per rectangle.
MIN_BLOCK_PATCHES = 4
BLOCK_ASPECT = (0.3, 1 / 0.3)
BLOCK_TRIES = 10


@dataclass(frozen=True)
class MaskedDistillationOptions:
    """The options both methods take; each module gives its paper's defaults."""

    output_dim: int = 2048
    bottleneck_dim: int = 256
    student_temperature: float = 0.1
    warmup_teacher_temperature: float = 0.04
    teacher_temperature: float = 0.07
    #: the share of all steps over which the teacher's temperature rises to ``teacher_temperature``
    warmup_fraction: float = 0.3
    center_momentum: float = 0.9
    base_momentum: float = 0.996
    #: the share of all steps for which the head's last layer is frozen (iBOT, DINOv2: the first of 100 epochs)
    frozen_last_layer_fraction: float = 0.01
    #: the share of global views that are masked, and the range of the share of patches each hides
    masked_views: float = 0.5
    min_mask_ratio: float = 0.1
    max_mask_ratio: float = 0.5
    koleo_weight: float = 0.0

    def __post_init__(self) -> None:
        positive = ("output_dim", "bottleneck_dim", "student_temperature", "teacher_temperature")
        require_positive(self, (*positive, "warmup_teacher_temperature"), "masked distillation")
        fractions = ("warmup_fraction", "frozen_last_layer_fraction", "center_momentum", "base_momentum")
        require_fractions(self, (*fractions, "masked_views", "min_mask_ratio", "max_mask_ratio"), "masked distillation")
        if self.min_mask_ratio > self.max_mask_ratio or self.koleo_weight < 0:
            raise ConfigError("masked distillation: need min_mask_ratio <= max_mask_ratio and koleo_weight >= 0")


def _add_block(mask: Tensor, most: int, generator: torch.Generator) -> int:
    """Hide one random rectangle of ``mask`` (rows, cols) adding 1 to ``most`` new patches; how many it added."""
    rows, cols = mask.shape
    for _ in range(BLOCK_TRIES):
        area, log_aspect, top, left = augment.uniform(generator, (4,)).tolist()
        area = MIN_BLOCK_PATCHES + (most - MIN_BLOCK_PATCHES) * area
        aspect = math.exp(math.log(BLOCK_ASPECT[0]) + (math.log(BLOCK_ASPECT[1] / BLOCK_ASPECT[0])) * log_aspect)
        height, width = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < height <= rows and 0 < width <= cols:
            top, left = int(top * (rows - height + 1)), int(left * (cols - width + 1))
            block = mask[top : top + height, left : left + width]
            added = int((~block).sum())
            if 0 < added <= most:
                block.fill_(True)
                return added
    return 0


def block_masks(
    batch: int, rows: int, cols: int, options: MaskedDistillationOptions, generator: torch.Generator
) -> Tensor:
    """(batch, rows, cols) bool, True where a patch is hidden. ``masked_views`` of the images (at least one) are
    masked, their targets spread evenly over [min, max] mask ratio as DINOv2's collate spreads them, each by
    rectangles until its target is met or no rectangle fits; an image that gets no rectangle hides one random patch.
    """
    patches = rows * cols
    masked = max(int(batch * options.masked_views), 1)
    low, high = options.min_mask_ratio, options.max_mask_ratio
    edges = torch.linspace(low, high, masked + 1, dtype=torch.float64)
    ratios = edges[:-1] + (edges[1:] - edges[:-1]) * augment.uniform(generator, (masked,))
    masks = torch.zeros(batch, rows, cols, dtype=torch.bool)
    for mask, ratio in zip(masks, ratios.tolist(), strict=False):
        target = max(round(ratio * patches), 1)
        while (count := int(mask.sum())) < target and _add_block(mask, target - count, generator):
            pass
        if not mask.any():
            mask.view(-1)[int(augment.uniform(generator, (1,)) * patches)] = True
    return masks[augment.uniform(generator, (batch,)).argsort()]


class MaskedDistillationModel(nn.Module):
    """Student ViT (masking wrapper) and head; their momentum copies (the teacher); the two losses' centres.

    ``steps_done`` is a buffer, so that a resumed run warms the temperature and frees the last layer as an unbroken
    one does.
    """

    def __init__(self, encoder: nn.Module, options: MaskedDistillationOptions, stage: Stage, head: type) -> None:
        super().__init__()
        vit = encoder.model
        if getattr(vit, "cls_token", None) is None:
            raise ConfigError("masked distillation needs a ViT with a class token (timm's default)")
        dims = vit.embed_dim, head_hidden_width(encoder), options.bottleneck_dim, options.output_dim
        self.encoder = encoder
        # The ViT's learned position embedding stays learned (MAE's wrapper default would fix it to sine-cosine);
        # the wrapper's own initialisation of the other weights is kept, as in lightly's DINOv2 example.
        self.student = MaskedVisionTransformerTIMM(vit=vit, pos_embed_initialization="skip")
        self.head = head(*dims)
        self.momentum_encoder = frozen_copy(encoder)
        self.teacher = MaskedVisionTransformerTIMM(
            vit=self.momentum_encoder.model, weight_initialization="skip", pos_embed_initialization="skip"
        )
        # A weight-normalised head cannot be deep-copied: the teacher's is a twin given the student's weights.
        self.momentum_head = head(*dims)
        self.momentum_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.momentum_head)
        self.criteria = nn.ModuleList()  # the losses' running centres: state of the model, checkpointed with it
        self.class_loss = DINOLoss(
            options.output_dim,
            student_temp=options.student_temperature,
            center_momentum=options.center_momentum,
        )
        self.patch_loss = IBOTPatchLoss(
            options.output_dim, student_temp=options.student_temperature, center_momentum=options.center_momentum
        )
        self.criteria.extend([self.class_loss, self.patch_loss])
        self.koleo = KoLeoLoss()
        self.frozen_last_layer_steps = stage.step_at(options.frozen_last_layer_fraction)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @property
    def patch_size(self) -> int:
        return self.student.vit.patch_embed.patch_size[0]

    def update_momentum(self, momentum: float) -> None:
        update_momentum(self.encoder, self.momentum_encoder, momentum)
        update_momentum(self.head, self.momentum_head, momentum)


def token_mask(masks: Tensor, prefix: int) -> Tensor:
    """(B, rows, cols) patch masks -> (B, prefix + rows x cols) token masks; prefix tokens are never hidden."""
    return torch.cat([masks.new_zeros(len(masks), prefix), masks.flatten(start_dim=1)], dim=1)


class MaskedDistillation(GlobalMethod):
    """iBOT's objective: DINO's class-token loss over multi-crop views, iBOT's loss on the hidden patches of the
    global views, and (where ``koleo_weight`` > 0) KoLeo on the student's global class tokens."""

    encoder_kinds = ("vit",)
    version = "2"  # 2: the last layer is frozen for a share of the steps, not for a first epoch of any length
    bf16_safe = True
    global_crops: ClassVar[Crops]
    local_crops: ClassVar[Crops]
    head: ClassVar[type]

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return MaskedDistillationModel(encoder, self.options, stage, self.head)

    def training_step(self, model: nn.Module, images: Tensor, stage: Stage, generator: torch.Generator) -> Tensor:
        options = self.options
        model.head.last_layer.requires_grad_(int(model.steps_done) >= model.frozen_last_layer_steps)
        global_views = crop_views(images, self.global_crops, stage.image_size, model.encoder, generator)
        local_views = crop_views(images, self.local_crops, stage.image_size, model.encoder, generator)
        grid = math.ceil(global_views.shape[-1] / model.patch_size)
        masks = block_masks(len(global_views), grid, grid, options, generator).to(images.device)
        hidden = token_mask(masks, model.student.vit.num_prefix_tokens)
        with torch.no_grad():
            teacher = model.teacher.encode(global_views)
            teacher_classes, teacher_patches = model.momentum_head(teacher[:, 0]), model.momentum_head(teacher[hidden])
        student = model.student.encode(global_views, mask=hidden)
        student_classes = torch.cat([student[:, 0], model.student.encode(local_views)[:, 0]])
        temperature = linear_warmup_schedule(
            int(model.steps_done),
            stage.step_at(options.warmup_fraction),
            options.warmup_teacher_temperature,
            options.teacher_temperature,
        )
        with nullcontext() if model.training else buffers_restored(model.criteria):
            class_loss = model.class_loss(
                list(teacher_classes.chunk(self.global_crops.count)),
                list(model.head(student_classes).chunk(self.global_crops.count + self.local_crops.count)),
                teacher_temp=temperature,
            )
            patch_loss = model.patch_loss(teacher_patches, model.head(student[hidden]), masks, teacher_temp=temperature)
        loss = class_loss + patch_loss
        if options.koleo_weight:
            global_classes = student[:, 0].chunk(self.global_crops.count)
            loss = loss + options.koleo_weight * sum(model.koleo(classes) for classes in global_classes)
        return loss

    def after_step(self, model: nn.Module, stage: Stage, step: int, total_steps: int) -> None:
        model.steps_done.fill_(step + 1)
        model.update_momentum(cosine_schedule(step, total_steps, self.options.base_momentum, 1.0))
