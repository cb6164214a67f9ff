"""Landmarks derived from masks, for the one-shot localisation protocols: lung apices and costophrenic angles
from lung masks, the optic disc's centre from disc masks.

Disc: the centroid of the mask's largest 8-connected region (stray pixels of an annotation do not move it); an
empty mask gets NaN.

Lungs, per image. The mask's two largest 8-connected regions are the lungs (a mask with fewer than two gets
NaN for every point); the one whose centroid lies left in the image is the patient's right lung (radiological
convention). Each landmark is the mean position of the lung's pixels that lie furthest in one direction:

- apex: furthest up (the lung's top row; the middle of the pixels there);
- costophrenic angle: furthest down and out, along the diagonal ``row + col`` (left lung) or ``row - col``
  (right lung): the lateral corner where the diaphragm meets the chest wall.

Points are in pixel ``(row, col)`` of the masks, pixel centres at integers.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

#: The disc landmark of :func:`disc_landmarks`.
DISC_LANDMARKS = ("optic disc centre",)
#: The lung landmarks, in the order :func:`lung_landmarks` gives them; sides are the patient's.
LUNG_LANDMARKS = ("right lung apex", "right costophrenic angle", "left lung apex", "left costophrenic angle")

_EIGHT_CONNECTED = np.ones((3, 3), bool)
_UP = (-1, 0)


def disc_landmarks(masks: np.ndarray) -> torch.Tensor:
    """:data:`DISC_LANDMARKS` of each disc mask ``bool (N, H, W)``, ``float32 (N, 1, 2)``."""
    return torch.from_numpy(np.stack([_disc_centre(mask) for mask in masks]).astype(np.float32))


def _disc_centre(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return np.full((1, 2), np.nan)
    largest = np.bincount(labels.ravel())[1:].argmax() + 1
    return np.argwhere(labels == largest).mean(axis=0, keepdims=True)


def lung_landmarks(masks: np.ndarray) -> torch.Tensor:
    """:data:`LUNG_LANDMARKS` of each lung mask ``bool (N, H, W)``, ``float32 (N, 4, 2)``."""
    return torch.from_numpy(np.stack([_one_image(mask) for mask in masks]).astype(np.float32))


def _one_image(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count < 2:
        return np.full((len(LUNG_LANDMARKS), 2), np.nan)
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.argsort(-sizes, kind="stable")[:2] + 1
    lungs = [np.argwhere(labels == label) for label in largest]
    right, left = sorted(lungs, key=lambda pixels: pixels[:, 1].mean())  # the patient's right is the image's left
    return np.stack([_extreme(right, _UP), _extreme(right, (1, -1)), _extreme(left, _UP), _extreme(left, (1, 1))])


def _extreme(pixels: np.ndarray, direction: tuple[int, int]) -> np.ndarray:
    """The mean ``(row, col)`` of the ``pixels (P, 2)`` that lie furthest along ``direction`` (row, col)."""
    reach = pixels @ np.asarray(direction)
    return pixels[reach == reach.max()].mean(axis=0)
