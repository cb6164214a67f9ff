"""Segmentation metrics and LD's soft Dice loss.

Predictions are binarised as ``probs >= threshold``; targets count as foreground where ``> 0.5``
(so bool, {0, 1} and soft targets all work). An empty prediction of an empty label scores 1.0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _binary_counts(probs: Tensor, targets: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: |prediction & target|, |prediction|, |target|, as float ``(N,)``."""
    if probs.shape != targets.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and targets {tuple(targets.shape)} differ in shape")
    predicted = (probs >= threshold).flatten(1)
    target = (targets > 0.5).flatten(1)
    overlap = (predicted & target).sum(1).float()
    return overlap, predicted.sum(1).float(), target.sum(1).float()


def dice_per_image(probs: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """Dice ``2|P & T| / (|P| + |T|)`` of each image of ``(N, ...)`` tensors, shape ``(N,)``."""
    overlap, predicted, target = _binary_counts(probs, targets, threshold)
    total = predicted + target
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))


def iou_per_image(probs: Tensor, targets: Tensor, threshold: float = 0.5) -> Tensor:
    """Intersection over union ``|P & T| / |P | T|`` of each image, shape ``(N,)``."""
    overlap, predicted, target = _binary_counts(probs, targets, threshold)
    union = predicted + target - overlap
    return torch.where(union > 0, overlap / union.clamp_min(1), torch.ones_like(union))


def soft_dice_from_sums(overlap: Tensor, target_sum: Tensor, prob_sum: Tensor) -> Tensor:
    """LD's soft Dice loss from its three sums; lets callers accumulate them over batches."""
    return -2 * overlap / (target_sum + prob_sum + 1)


def soft_dice_loss(probs: Tensor, targets: Tensor) -> Tensor:
    """LD's batch-global soft Dice loss ``-2 sum(y p) / (sum y + sum p + 1)``.

    Negative, as in the authors' code: a perfect large prediction approaches -1.
    """
    targets = targets.to(probs.dtype)
    return soft_dice_from_sums((targets * probs).sum(), targets.sum(), probs.sum())
