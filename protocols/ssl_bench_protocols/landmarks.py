"""``landmarks`` and ``landmarks-nearest``: one-shot landmark localisation by matching frozen per-pixel features.

One labelled image (the template) shows where each landmark is; on every test image the landmark is put at the
pixel whose features are most similar to the template's features at that landmark. Nothing is trained. It measures
whether pretraining gave each pixel features that say which anatomical point it is: LD's (Chen et al., TPAMI 2023)
centre-sensitive one-shot localisation. Only tasks that carry landmarks (:attr:`Task.landmarks`) are served.

Features. Every encoder stage upsampled (bilinear) to the working size and L2-normalised per pixel, the stages
concatenated with equal weight (so a pixel's similarity to another is the mean over stages of their cosine
similarities, whatever each stage's scale) and normalised again.

Matching. ``landmarks-nearest`` compares plain per-pixel features. ``landmarks`` compares centre-weighted
averages: each pixel's descriptor is the Gaussian-weighted mean (over the pixels inside the image) of the features
around it, renormalised, in the template and in the test image alike. This is LD's centre-sensitive averaging: a
descriptor that describes a neighbourhood, weighted towards its centre, so that a match needs the surroundings to
agree and peaks where the neighbourhoods are centred on each other. (The paper also pretrains LD with that
averaging; here it is applied to every method's frozen features at matching time only, so that every method is
scored the same way. The released LD code has no localisation code; this follows the paper's description.) The
template's descriptor at a landmark is sampled bilinearly at its sub-pixel position; the prediction is the
arg-max pixel of the cosine similarity.

Templates. The first ``templates`` training images (in the task's list order) that have every landmark; each
localises every test image and scores are averaged over templates. The templates do not depend on the label
fraction (a one-shot protocol uses one image), so every fraction gives the same scores.

Metrics, per test image over templates and the landmarks it has (NaN points are not scored), in the task's own
pixels (the prepared images, e.g. 512 x 512): the mean radial error in pixels (the headline) and as a fraction of
the image's diagonal (both lower is better), and the success rates, the fraction of predictions within 2%, 4% and
8% of the diagonal (higher is better). Test images without any landmark are left out.

Settings. ``demo``: working size 96 px (the supervised demo's), 3 templates, Gaussian sigma 3 px. ``paper`` and
``matched``: 512 px (LD's transfer size), 5 templates, sigma 16 px (1/32 of the side in both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.api import (
    Budget,
    ConfigError,
    Context,
    DataError,
    Encoder,
    FrozenFeatureProtocol,
    Metric,
    Outcome,
    Scores,
    SegmentationSplit,
    Selection,
    Task,
    hookimpl,
    require_whole_numbers,
)
from ssl_bench.api.augment import normalize
from ssl_bench.api.supervised import standard_settings

#: Success thresholds, as fractions of the image diagonal.
SUCCESS_FRACTIONS = (0.02, 0.04, 0.08)
# The Gaussian kernel reaches this many sigmas either side; beyond, its weights are below 1.2%.
_KERNEL_REACH = 3.0
# Images per feature batch: as many as fit this many working pixels (one at 512 px), at most _BATCH_SIZE.
_PIXELS_PER_BATCH = 2**18
_BATCH_SIZE = 16


@dataclass(frozen=True)
class LandmarkSettings:
    """Working size (px), how many templates, and the centre-weighting Gaussian's sigma in working pixels (0:
    plain per-pixel features)."""

    image_size: int
    templates: int
    sigma: float

    def __post_init__(self) -> None:
        require_whole_numbers(self, {"image_size": 1, "templates": 1}, "landmark")
        if not isinstance(self.sigma, (int, float)) or not self.sigma >= 0:
            raise ConfigError(f"landmark setting sigma must be a number >= 0 (pixels), got {self.sigma!r}")


@torch.no_grad()
def pixel_features(encoder: Encoder, images: Tensor, size: int) -> Tensor:
    """The unit per-pixel features ``(N, C, size, size)`` of ``uint8 (N, C_in, H, W)`` images at ``size`` px: each
    stage upsampled and L2-normalised, the stages concatenated with equal weight."""
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    stages = encoder(normalize(resized.round().clamp(0, 255) / 255))
    unit = [F.normalize(F.interpolate(s, size=(size, size), mode="bilinear"), dim=1) for s in stages]
    return torch.cat(unit, dim=1) / math.sqrt(len(unit))


def gaussian_kernel(sigma: float, device: torch.device) -> Tensor:
    """The 1-D Gaussian weights ``(2r + 1,)``, ``r = ceil(3 sigma)``, summing to 1."""
    reach = math.ceil(_KERNEL_REACH * sigma)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float32, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _blur(maps: Tensor, kernel: Tensor) -> Tensor:
    """The separable blur of ``maps (M, H, W)`` by ``kernel``, zero outside: two products with banded matrices (on
    a CPU 17x faster than one-channel convolutions of the hundreds of feature maps at 96 px)."""
    return _band(maps.shape[-2], kernel) @ maps @ _band(maps.shape[-1], kernel).T


def _band(size: int, kernel: Tensor) -> Tensor:
    """The ``size`` x ``size`` matrix of the 1-D convolution by ``kernel`` with zero padding (row i weighs pixel j
    by ``kernel[j - i + reach]``)."""
    reach = len(kernel) // 2
    positions = torch.arange(size, device=kernel.device)
    offsets = positions[None, :] - positions[:, None] + reach
    inside = (offsets >= 0) & (offsets < len(kernel))
    return torch.where(inside, kernel[offsets.clamp(0, len(kernel) - 1)], torch.zeros((), device=kernel.device))


def centre_weighted(features: Tensor, sigma: float) -> Tensor:
    """Each pixel's Gaussian-weighted mean of ``features (N, C, H, W)`` over the pixels inside the image, unit length.

    With ``sigma`` 0 the features themselves. The blur of the features is divided by the blur of an all-ones
    image: near the border the weights are those of the pixels that exist.
    """
    if sigma == 0:
        return features
    kernel = gaussian_kernel(sigma, features.device)
    weight = _blur(torch.ones_like(features[:1, 0]), kernel)
    return F.normalize(_blur(features.flatten(0, 1), kernel).view_as(features) / weight, dim=1)


def to_working(points: Tensor, task_size: tuple[int, int], size: int) -> Tensor:
    """Pixel ``(row, col)`` points of a ``task_size`` image in a ``size`` x ``size`` resizing of it (pixel centres
    at integers in both, as ``F.interpolate`` aligns them)."""
    scale = torch.tensor([size / task_size[0], size / task_size[1]], device=points.device)
    return (points + 0.5) * scale - 0.5


def to_task(points: Tensor, task_size: tuple[int, int], size: int) -> Tensor:
    """The inverse of :func:`to_working`."""
    scale = torch.tensor([task_size[0] / size, task_size[1] / size], device=points.device)
    return (points + 0.5) * scale - 0.5


def sample_descriptors(descriptors: Tensor, points: Tensor) -> Tensor:
    """Unit ``descriptors (N, C, H, W)`` sampled bilinearly at working ``(row, col)`` ``points (N, L, 2)``,
    ``(N, L, C)``."""
    height, width = descriptors.shape[2:]
    # grid_sample's [-1, 1] coordinates (align_corners=False) of the points, as (x, y).
    grid = torch.stack([(2 * points[..., 1] + 1) / width - 1, (2 * points[..., 0] + 1) / height - 1], dim=-1)
    sampled = F.grid_sample(descriptors, grid[:, None], mode="bilinear", align_corners=False)  # (N, C, 1, L)
    return F.normalize(sampled[:, :, 0].transpose(1, 2), dim=2)


def locate(descriptors: Tensor, queries: Tensor) -> Tensor:
    """For each unit query ``(Q, C)``, the working ``(row, col)`` of the pixel of each of ``descriptors (N, C, H,
    W)`` most similar to it (cosine; ties: the first in raster order), ``float (N, Q, 2)``."""
    width = descriptors.shape[3]
    best = (queries @ descriptors.flatten(2)).argmax(dim=2)
    return torch.stack([best // width, best % width], dim=2).float()


def radial_scores(predicted: Tensor, truth: Tensor, diagonal: float) -> dict[str, Tensor]:
    """Per-image scores of ``predicted (K, N, L, 2)`` points (K templates) against ``truth (N, L, 2)`` (NaN: absent).

    Each is the mean over templates and present landmarks: ``radial_error_px`` (Euclidean distance),
    ``radial_error_diag`` (that over ``diagonal``) and ``success_<p>pct`` (the fraction within p% of it); NaN for
    an image without any landmark.
    """
    errors = (predicted - truth).norm(dim=-1)  # (K, N, L); NaN where the truth is absent
    present = ~truth[..., 0].isnan()
    predictions = len(predicted) * present.sum(dim=1)  # per image; 0 gives NaN means

    def mean(values: Tensor) -> Tensor:
        return torch.where(present, values, 0).sum(dim=(0, 2)) / predictions

    scores = {"radial_error_px": mean(errors), "radial_error_diag": mean(errors / diagonal)}
    for fraction in SUCCESS_FRACTIONS:
        scores[f"success_{round(100 * fraction)}pct"] = mean((errors <= fraction * diagonal).float())
    return scores


def templates_of(train: SegmentationSplit, count: int, task: Task) -> SegmentationSplit:
    """The first ``count`` training images with every landmark (fewer if fewer have them)."""
    complete = (~train.landmarks.isnan()).flatten(1).all(dim=1).nonzero().flatten()[:count]
    if len(complete) == 0:
        raise DataError(
            f"no training image of task {task.name} has all of its {len(task.landmarks)} landmarks "
            f"({', '.join(task.landmarks)}), so none can be a template: check the task's landmarks"
        )
    return SegmentationSplit(
        train.images[complete], train.masks[complete], tuple(train.ids[i] for i in complete), train.landmarks[complete]
    )


def check_landmarks(context: Context) -> None:
    """:class:`DataError` unless the task's data carry one point per declared landmark in both splits."""
    task, data = context.task, context.data
    for name, split in (("train", data.train), ("test", data.test)):
        count = None if split.landmarks is None else split.landmarks.shape[1]
        if count != len(task.landmarks):
            raise DataError(
                f"task {task.name} declares {len(task.landmarks)} landmarks but its {name} split carries "
                f"{count or 'no'} points per image: its load() must fill SegmentationSplit.landmarks"
            )


class Landmarks(FrozenFeatureProtocol):
    name = "landmarks"
    version = "2"  # the blur as banded products: the same sums, in another order
    description = "one-shot landmark localisation: LD's centre-sensitive matching of frozen per-pixel features"
    task_kinds = ("segmentation",)
    frozen_encoder = True
    #: The centre-weighting sigma as a fraction of the working side.
    sigma_fraction = 1 / 32

    def serves(self, task: Task) -> bool:
        return super().serves(task) and bool(task.landmarks)

    def settings(self, budget: Budget, task: Task) -> LandmarkSettings:
        size = standard_settings(budget, task).image_size  # the supervised protocols' input size
        return LandmarkSettings(
            image_size=size, templates=3 if budget.scale == "demo" else 5, sigma=size * self.sigma_fraction
        )

    def metrics(self, task: Task) -> tuple[Metric, ...]:
        return (
            Metric("radial_error_px", higher_is_better=False, description="mean radial error, task pixels", low=0.0),
            Metric(
                "radial_error_diag", higher_is_better=False, description="mean radial error / image diagonal", low=0.0
            ),
            *(
                Metric(
                    f"success_{round(100 * p)}pct",
                    description=f"predictions within {p:.0%} of the diagonal",
                    low=0.0,
                    high=1.0,
                )
                for p in SUCCESS_FRACTIONS
            ),
        )

    def score(self, encoder: Encoder, context: Context) -> Outcome:
        check_landmarks(context)
        settings, test, device = context.settings, context.data.test, context.device
        templates = templates_of(context.data.train, settings.templates, context.task)
        task_size = tuple(test.images.shape[-2:])

        def descriptors(images: Tensor) -> Tensor:
            return centre_weighted(pixel_features(encoder, images.to(device), settings.image_size), settings.sigma)

        points = to_working(templates.landmarks.to(device), task_size, settings.image_size)
        queries = torch.cat(
            [
                sample_descriptors(descriptors(templates.images[rows]), points[rows])
                for rows in _batches(templates, settings)
            ]
        )  # (K, L, C)
        found = torch.cat(
            [locate(descriptors(test.images[rows]), queries.flatten(0, 1)) for rows in _batches(test, settings)]
        )
        predicted = to_task(found.cpu(), task_size, settings.image_size).unflatten(1, queries.shape[:2])  # (N, K, L, 2)
        scores = radial_scores(predicted.transpose(0, 1), test.landmarks, diagonal=math.hypot(*task_size))
        return Outcome(
            scores=_per_image(scores, test.ids, context.task),
            selection=Selection(epoch=None, val_loss=None, val_loss_name="none: nothing is trained or selected"),
            seconds=0.0,
        )


class LandmarksNearest(Landmarks):
    name = "landmarks-nearest"
    description = "one-shot landmark localisation: the nearest frozen per-pixel feature (no centre weighting)"
    sigma_fraction = 0.0
    version = "1"  # no blur: nothing changed with landmarks' version 2


def _batches(split: SegmentationSplit, settings: LandmarkSettings) -> list[slice]:
    """The split's rows in batches whose features fit in memory at the working size."""
    size = max(1, min(_BATCH_SIZE, _PIXELS_PER_BATCH // settings.image_size**2))
    return [slice(start, start + size) for start in range(0, len(split), size)]


def _per_image(scores: dict[str, Tensor], ids: tuple[str, ...], task: Task) -> dict[str, Scores]:
    """The scores of the test images that have at least one landmark."""
    scored = (~scores["radial_error_px"].isnan()).nonzero().flatten().tolist()
    if not scored:
        raise DataError(f"no test image of task {task.name} has any of its landmarks: nothing to score")
    kept = tuple(ids[i] for i in scored)
    return {name: Scores(per_image=tuple(values[scored].tolist()), ids=kept) for name, values in scores.items()}


@hookimpl
def ssl_bench_register_protocols(register):
    register(Landmarks)
    register(LandmarksNearest)
