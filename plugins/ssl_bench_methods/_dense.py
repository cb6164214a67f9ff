"""Pieces the dense methods share: views with known geometry (VICRegL, DetCon) and schedules.

A view is a crop box of its source image, resized and possibly flipped. Keeping the box and flips lets a
method say where in the source image each pixel or feature cell of a view comes from, and so match
locations across two views (VICRegL) or carry per-pixel labels along with the image (DetCon).

Coordinates follow ``affine_grid`` with ``align_corners=False``: x and y in [-1, 1] span the source image
from the left (top) edge of its first pixel to the right (bottom) edge of its last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.api import Stage, augment
from ssl_bench.api.augment import normalize

ASPECT_RATIOS = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ViewGeometry:
    """Where each view of a batch comes from in its source image (all float64 on the CPU, (B,) each).

    ``top``, ``left``, ``height``, ``width``: the crop box in source pixels (not rounded); ``flip_x`` and
    ``flip_y``: whether the box's content is mirrored left-right or upside-down in the view.
    """

    source_size: tuple[int, int]
    top: Tensor
    left: Tensor
    height: Tensor
    width: Tensor
    flip_x: Tensor
    flip_y: Tensor

    def theta(self) -> Tensor:
        """(B, 2, 3) affine maps from view coordinates to source coordinates, both in [-1, 1]."""
        source_height, source_width = self.source_size
        theta = torch.zeros(len(self.top), 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = torch.where(self.flip_x, -1.0, 1.0) * self.width / source_width
        theta[:, 0, 2] = (2 * self.left + self.width) / source_width - 1
        theta[:, 1, 1] = torch.where(self.flip_y, -1.0, 1.0) * self.height / source_height
        theta[:, 1, 2] = (2 * self.top + self.height) / source_height - 1
        return theta

    def source_grid(self, height: int, width: int, like: Tensor) -> Tensor:
        """(B, height, width, 2): the source location (x, y) of the centre of each cell of a
        ``height x width`` map laid over the views, on ``like``'s device and dtype."""
        theta = self.theta().to(device=like.device, dtype=like.dtype)
        return F.affine_grid(theta, [len(theta), 1, height, width], align_corners=False)

    def warp(self, sources: Tensor, height: int, width: int, mode: str = "bilinear") -> Tensor:
        """Resample float ``sources`` (B, C, H, W) into the views, at ``height x width``; ``nearest`` for labels."""
        grid = self.source_grid(height, width, sources)
        # Border padding: sample points stay inside the box, but its outer half-pixels must not fade to zero.
        return F.grid_sample(sources, grid, mode=mode, padding_mode="border", align_corners=False)


def sample_geometry(
    batch: int, source_size: tuple[int, int], generator: torch.Generator, scale: tuple[float, float]
) -> ViewGeometry:
    """Random crop boxes of area fraction ~ U(scale) and log-uniform aspect ratio, shrunk to fit the image
    where needed, placed uniformly; each view flipped left-right and upside-down with p = 0.5 each
    (medical images have no canonical up)."""
    height, width = source_size
    draws = torch.rand(6, batch, generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_low, log_high = math.log(ASPECT_RATIOS[0]), math.log(ASPECT_RATIOS[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[1])
    box_width = torch.sqrt(area * aspect).clamp(max=width)
    box_height = torch.sqrt(area / aspect).clamp(max=height)
    return ViewGeometry(
        source_size=(height, width),
        top=draws[2] * (height - box_height),
        left=draws[3] * (width - box_width),
        height=box_height,
        width=box_width,
        flip_x=draws[4] < 0.5,
        flip_y=draws[5] < 0.5,
    )


def dense_view(
    images: Tensor, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.2, 1.0)
) -> tuple[Tensor, ViewGeometry]:
    """One normalised ``size x size`` view per image and its geometry: :func:`augment.contrastive_view`'s
    recipe, with the crop and flips drawn here so that they are known."""
    geometry = sample_geometry(images.shape[0], tuple(images.shape[-2:]), generator, scale)
    views = geometry.warp(images, size, size)
    views = augment.color_jitter(views, generator, 0.4, 0.4, 0.4, 0.1, p=0.8)
    views = augment.random_grayscale(views, generator, p=0.2)
    views = augment.gaussian_blur(views, generator, p=0.5)
    return normalize(views), geometry


def two_view_stages(name: str, scale: str) -> list[Stage]:
    """The schedules of the two-view dense methods, SimCLR's: ``demo`` a few hundred images; ``paper`` LD's
    budget (100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) at 32 source images per step."""
    if scale == "paper":
        return [Stage(name, epochs=100, steps_per_epoch=1000, batch_size=32, image_size=448, lr=1e-3)]
    return [Stage(name, epochs=2, steps_per_epoch=10, batch_size=16, image_size=64, lr=1e-3)]
