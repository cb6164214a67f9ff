"""Segmentation as a downstream task kind: LD's data split, resizing, augmentation, loss and scores.

LD's transfer (Chen et al.): only the encoder is transferred; a fresh U-Net decoder and head are trained with
LD's soft Dice loss and scored on the test split by per-image Dice and IoU at 0.5. Validation is the first
20% of the labelled subset (:mod:`ssl_bench.supervised.labelled`: for LD's tasks, which keep their released
order, the first 20% of the label-fraction prefix of the training list, as LD splits); test data never steer
training or selection.

Selection differs from the released code in one way, on purpose: the released code averages per-batch Dice
over shuffled validation batches, which depends on the batch size and order; here the soft Dice loss is
computed once over the whole validation split (its three sums accumulated over batches), so that selection is
deterministic and the same on every device and batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.augment import normalize, random_flip_rotate
from ssl_bench.metrics import dice_per_image, iou_per_image, soft_dice_from_sums, soft_dice_loss
from ssl_bench.models import SegmentationModel
from ssl_bench.protocol import Scores
from ssl_bench.supervised.labelled import labelled_rows
from ssl_bench.supervised.loop import SupervisedProblem, SupervisedSettings
from ssl_bench.task import SegmentationData, SegmentationSplit

VALIDATION_FRACTION = 0.2
# Inference only: larger than training batches for speed, small enough for 512 px on any device.
_EVAL_BATCH_SIZE = 16
# Resizing happens in chunks so that float copies of a large task never sit in memory at once.
_RESIZE_CHUNK = 64


def split_train_val(labelled: Tensor) -> tuple[Tensor, Tensor]:
    """LD's split of the labelled rows, in their order: ``(train, validation)``.

    Validation is the first ``floor(0.2 n)`` of the ``n`` rows (at least one), training the rest.
    """
    val = max(1, math.floor(VALIDATION_FRACTION * len(labelled) + 1e-9))
    return labelled[val:], labelled[:val]


def resize_split(split: SegmentationSplit, size: int, device: torch.device) -> SegmentationSplit:
    """``split`` at ``size`` x ``size`` on ``device``: images bilinear (antialiased), masks bilinear then > 0.5.

    Images stay uint8, as a resized image file would be, to keep large tasks small on the device.
    """
    images, masks = [], []
    for start in range(0, len(split), _RESIZE_CHUNK):
        chunk = slice(start, start + _RESIZE_CHUNK)
        image = split.images[chunk].to(device).float()
        mask = split.masks[chunk].to(device).float().unsqueeze(1)
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True)
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", antialias=True)
        images.append(image.round().clamp(0, 255).to(torch.uint8))
        masks.append(mask.squeeze(1) > 0.5)
    return SegmentationSplit(torch.cat(images), torch.cat(masks), split.ids)


def segmentation_splits(
    data: SegmentationData, label_fraction: float, size: int, device: torch.device, *, subset_seed: int | None
) -> tuple[SegmentationSplit, SegmentationSplit, SegmentationSplit]:
    """LD's ``(train, validation, test)`` of ``data`` for ``label_fraction``, at ``size`` on ``device``.

    The labelled rows are drawn from ``subset_seed``, or are the training list's prefix where it is None.
    """
    labelled = labelled_rows(len(data.train), label_fraction, seed=subset_seed)
    train_rows, val_rows = split_train_val(labelled)
    return (
        resize_split(data.train.subset(train_rows), size, device),
        resize_split(data.train.subset(val_rows), size, device),
        resize_split(data.test, size, device),
    )


@torch.no_grad()
def _predict(model: nn.Module, split: SegmentationSplit) -> Iterator[tuple[Tensor, Tensor]]:
    """Sigmoid probabilities and float masks ``(B, 1, H, W)``, batch by batch, with the model in eval mode."""
    model.eval()
    for start in range(0, len(split), _EVAL_BATCH_SIZE):
        rows = slice(start, start + _EVAL_BATCH_SIZE)
        probs = torch.sigmoid(model(normalize(split.images[rows].float() / 255)))
        yield probs, split.masks[rows].unsqueeze(1).float()


def validation_loss(model: nn.Module, val: SegmentationSplit) -> float:
    """LD's soft Dice loss, global over the whole validation split (not a mean of batch losses)."""
    overlap = target_sum = prob_sum = torch.zeros((), dtype=torch.float64)
    for probs, masks in _predict(model, val):
        overlap = overlap + (probs * masks).sum().double().cpu()
        target_sum = target_sum + masks.sum().double().cpu()
        prob_sum = prob_sum + probs.sum().double().cpu()
    return float(soft_dice_from_sums(overlap, target_sum, prob_sum))


def mask_scores(predicted: Tensor, test: SegmentationSplit) -> dict[str, Scores]:
    """Per-image Dice and IoU of the ``predicted`` masks ``(N, H, W)`` (binary, or probabilities taken at 0.5), for
    protocols that predict masks without a model of their own (clustering, shape-guided)."""
    predicted, masks, ids = predicted.unsqueeze(1).float(), test.masks.unsqueeze(1).float(), tuple(test.ids)
    return {
        "dice": Scores(per_image=tuple(dice_per_image(predicted, masks).tolist()), ids=ids),
        "iou": Scores(per_image=tuple(iou_per_image(predicted, masks).tolist()), ids=ids),
    }


def score(model: nn.Module, test: SegmentationSplit) -> dict[str, Scores]:
    """Per-image Dice and IoU at 0.5 of ``model``'s sigmoid output on ``test``."""
    dice, iou = [], []
    for probs, masks in _predict(model, test):
        dice.append(dice_per_image(probs, masks).cpu())
        iou.append(iou_per_image(probs, masks).cpu())
    ids = tuple(test.ids)
    return {
        "dice": Scores(per_image=tuple(torch.cat(dice).tolist()), ids=ids),
        "iou": Scores(per_image=tuple(torch.cat(iou).tolist()), ids=ids),
    }


class SegmentationProblem(SupervisedProblem):
    """A segmentation task at the settings' size on the device, its labelled subset split as LD splits its list."""

    val_loss_name = "soft_dice_loss"

    def __init__(
        self,
        data: SegmentationData,
        settings: SupervisedSettings,
        *,
        label_fraction: float,
        subset_seed: int | None,
        flips: bool,
        rotation_degrees: float,
        device: torch.device,
    ) -> None:
        self.train, self.val, self.test = segmentation_splits(
            data, label_fraction, settings.image_size, device, subset_seed=subset_seed
        )
        self.flips, self.rotation_degrees = flips, rotation_degrees

    @property
    def train_size(self) -> int:
        return len(self.train)

    def build_model(self, encoder: nn.Module) -> nn.Module:
        return SegmentationModel(encoder)

    def train_loss(self, model: nn.Module, rows: Tensor, generator: torch.Generator) -> Tensor:
        rows = rows.to(self.train.images.device)
        images = self.train.images[rows].float() / 255
        masks = self.train.masks[rows].unsqueeze(1).float()
        images, masks = random_flip_rotate(images, masks, self.rotation_degrees, generator, flips=self.flips)
        return soft_dice_loss(torch.sigmoid(model(normalize(images))), masks)

    def validation_loss(self, model: nn.Module) -> float:
        return validation_loss(model, self.val)

    def score(self, model: nn.Module) -> dict[str, Scores]:
        return score(model, self.test)
