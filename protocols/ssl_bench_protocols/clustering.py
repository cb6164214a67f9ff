"""``clustering``: k-means on the frozen encoder's per-pixel features, clusters matched to the target on validation.

No label is used to learn anything: k-means runs on features of the training rows of LD's split (their masks are
never read), and the labelled validation rows (the first 20% of the labelled subset) only decide which clusters
are foreground. It measures whether pretraining groups pixels by anatomy on its own, as LD's clustering analysis.

Features. Every encoder stage upsampled (bilinear) to the input size and concatenated, as ``linear-seg``'s; each
channel standardised over the sampled training pixels (stages differ in scale by orders of magnitude, and ReLU
features, all positive, would otherwise share one dominant direction), then L2-normalised per pixel. Spherical
k-means (cosine similarity; k-means++ seeding and the sampled pixels drawn from the context's generator) clusters
``pixels_per_image`` random pixels of each training image. Assigning a pixel to its most similar centroid is
linear in the standardised features, so full-resolution assignments are computed stage by stage without ever
building the concatenation (:class:`~ssl_bench_protocols._multiscale.MultiScaleLinear`).

Matching. Several clusters may be foreground (a binary target is rarely one cluster). The foreground set maximises
the Dice of the validation pixels pooled over the validation rows; the exact maximiser is found among the
clusters sorted by purity (their fraction of foreground pixels) as one of the K + 1 prefixes of that order: adding
a cluster raises pooled Dice ``D`` iff its purity exceeds ``D / 2``, so an optimal set holds every cluster purer
than ``D* / 2`` and none less pure. (One-to-one Hungarian matching of K clusters to 2 classes would leave K - 2
clusters unassigned.) Test images are scored by per-image Dice and IoU of the matched clusters' union.

Settings. ``demo``: 96 px, 8 clusters, 256 pixels per image, 20 iterations: under a second per job on a CPU core.
``paper``/``matched``: 512 px (LD's transfer size, as the supervised protocols), 16 clusters (room for the
anatomy a fundus or X-ray shows besides the target), 512 pixels per image, 50 iterations.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.api import (
    Budget,
    Context,
    Encoder,
    FrozenFeatureProtocol,
    Metric,
    Outcome,
    SegmentationSplit,
    Selection,
    Task,
    hookimpl,
    require_whole_numbers,
)
from ssl_bench.api.augment import normalize
from ssl_bench.api.nets import FeatureInfo
from ssl_bench.api.supervised import mask_scores, segmentation_splits, standard_settings, supervised_metrics
from ssl_bench_protocols._multiscale import MultiScaleLinear

# Inference batch: BatchNorm is in eval mode, so it changes no result; small enough for 512 px on any device.
_BATCH_SIZE = 16
# A constant channel (a dead ReLU) standardises to zero rather than to a division by zero.
_MIN_STD = 1e-6


@dataclass(frozen=True)
class ClusteringSettings:
    """Input size, the number of k-means clusters, Lloyd iterations, and pixels sampled per training image."""

    image_size: int
    clusters: int
    iterations: int
    pixels_per_image: int

    def __post_init__(self) -> None:
        least = {"image_size": 1, "clusters": 2, "iterations": 1, "pixels_per_image": 1}
        require_whole_numbers(self, least, "clustering")


def kmeans_plus_plus(points: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeding of unit ``points (N, C)``: each next centroid drawn with probability proportional to its
    squared distance to the nearest one chosen so far. Draws happen on the CPU, where ``generator`` lives."""
    chosen = [int(torch.randint(len(points), (1,), generator=generator))]
    # For unit vectors the squared distance is 2 - 2 cos.
    nearest = (2 - 2 * points @ points[chosen[0]]).clamp_min(0)
    for _ in range(clusters - 1):
        weights = nearest.double().cpu()
        # Fewer distinct points than clusters: the rest are drawn uniformly (they coincide with chosen ones).
        weights = weights if weights.sum() > 0 else torch.ones_like(weights)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        nearest = torch.minimum(nearest, (2 - 2 * points @ points[chosen[-1]]).clamp_min(0))
    return points[chosen]


def spherical_kmeans(points: Tensor, clusters: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Unit centroids ``(K, C)`` of unit ``points (N, C)``: k-means++ seeding, then Lloyd steps on cosine similarity.

    An emptied cluster keeps its centroid. Sums are one-hot matrix products, deterministic on every device.
    """
    centroids = kmeans_plus_plus(points, clusters, generator)
    for _ in range(iterations):
        members = F.one_hot((points @ centroids.T).argmax(1), clusters).to(points.dtype)
        sums = members.T @ points
        centroids = torch.where(members.sum(0).unsqueeze(1) > 0, F.normalize(sums, dim=1), centroids)
    return centroids


def match_clusters(sizes: Tensor, overlaps: Tensor, foreground: int) -> tuple[Tensor, float]:
    """The foreground clusters ``bool (K,)`` that maximise pooled Dice, and that Dice.

    ``sizes[k]`` counts the pixels of cluster ``k``, ``overlaps[k]`` its foreground pixels, ``foreground`` all
    foreground pixels. The best set is a prefix of the clusters by decreasing purity (see the module docstring);
    ties keep the shorter prefix. Dice of an empty prediction of no foreground is 1.
    """
    purity = overlaps.double() / sizes.double().clamp_min(1)
    order = torch.sort(purity, descending=True, stable=True).indices
    zero = torch.zeros(1, dtype=torch.float64)
    overlap = torch.cat([zero, overlaps.double()[order].cumsum(0)])
    predicted = torch.cat([zero, sizes.double()[order].cumsum(0)])
    total = predicted + foreground
    dice = torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))
    best = int(dice.argmax())  # the first maximum: the shorter prefix
    chosen = torch.zeros(len(sizes), dtype=torch.bool)
    chosen[order[:best]] = True
    return chosen, float(dice[best])


def _batches(split: SegmentationSplit) -> Iterator[Tensor]:
    """The split's images as the encoder takes them, batch by batch."""
    for start in range(0, len(split), _BATCH_SIZE):
        yield normalize(split.images[start : start + _BATCH_SIZE].float() / 255)


def sample_pixels(features: list[Tensor], rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
    """The upsampled, concatenated ``features`` of ``(N, C_s, h_s, w_s)`` at pixels ``(rows, cols)`` ``(N, P)`` of
    a ``size`` image, ``(N * P, sum C_s)``: bilinear sampling at those pixels equals upsampling, then indexing."""
    height, width = size
    # The pixel centres in grid_sample's [-1, 1] coordinates (align_corners=False, as F.interpolate's).
    grid = torch.stack([(2 * cols + 1) / width - 1, (2 * rows + 1) / height - 1], dim=-1).unsqueeze(1)
    sampled = [
        F.grid_sample(feature, grid.to(feature.dtype), mode="bilinear", padding_mode="border", align_corners=False)
        for feature in features
    ]
    return torch.cat(sampled, dim=1).squeeze(2).transpose(1, 2).flatten(0, 1)


@torch.no_grad()
def training_pixels(encoder: Encoder, split: SegmentationSplit, per_image: int, generator: torch.Generator) -> Tensor:
    """The features of ``per_image`` random pixels (drawn with replacement) of every image, ``(N * P, C)``."""
    size = tuple(split.images.shape[-2:])
    pixels = []
    for images in _batches(split):
        rows, cols = (torch.randint(n, (len(images), per_image), generator=generator) for n in size)
        pixels.append(sample_pixels(encoder(images), rows.to(images.device), cols.to(images.device), size))
    return torch.cat(pixels)


def cluster_head(feature_info: list[FeatureInfo], centroids: Tensor, mean: Tensor, std: Tensor) -> MultiScaleLinear:
    """The cosine similarity of each pixel's standardised features to each centroid, up to the pixel's positive norm
    (which no argmax sees): ``sum_c centroid_c (x_c - mean_c) / std_c``, a 1x1 conv with bias."""
    head = MultiScaleLinear(feature_info, outputs=len(centroids)).to(centroids.device)
    weights = (centroids / std).split([info.channels for info in feature_info], dim=1)
    with torch.no_grad():
        for conv, weight in zip(head.convs, weights, strict=True):
            conv.weight.copy_(weight[:, :, None, None])
        head.bias.copy_(-(centroids / std) @ mean)
    return head


@torch.no_grad()
def assign(encoder: Encoder, head: MultiScaleLinear, split: SegmentationSplit) -> Tensor:
    """Each pixel's cluster, ``int64 (N, H, W)``."""
    return torch.cat([head(encoder(images), size=images.shape[-2:]).argmax(1) for images in _batches(split)])


def fit_clusters(
    encoder: Encoder, train: SegmentationSplit, settings: ClusteringSettings, generator: torch.Generator
) -> MultiScaleLinear:
    """Spherical k-means on the standardised features of sampled training pixels, as a head that scores every
    pixel against every centroid."""
    pixels = training_pixels(encoder, train, settings.pixels_per_image, generator)
    mean, std = pixels.mean(0), pixels.std(0).clamp_min(_MIN_STD)
    unit = F.normalize((pixels - mean) / std, dim=1)
    centroids = spherical_kmeans(unit, settings.clusters, settings.iterations, generator)
    return cluster_head(encoder.feature_info, centroids, mean, std)


def foreground_clusters(clusters: Tensor, masks: Tensor, count: int) -> tuple[Tensor, float]:
    """:func:`match_clusters` on the pixels' ``clusters`` and ``masks`` ``(N, H, W)`` of ``count`` clusters."""
    sizes = torch.bincount(clusters.flatten(), minlength=count).cpu()
    overlaps = torch.bincount(clusters[masks], minlength=count).cpu()
    return match_clusters(sizes, overlaps, int(masks.sum()))


class Clustering(FrozenFeatureProtocol):
    name = "clustering"
    description = "k-means on the frozen encoder's per-pixel features; clusters matched to the target on validation"
    task_kinds = ("segmentation",)
    frozen_encoder = True

    def settings(self, budget: Budget, task: Task) -> ClusteringSettings:
        size = standard_settings(budget, task).image_size  # the supervised protocols' input size
        if budget.scale == "demo":
            return ClusteringSettings(image_size=size, clusters=8, iterations=20, pixels_per_image=256)
        return ClusteringSettings(image_size=size, clusters=16, iterations=50, pixels_per_image=512)

    def metrics(self, task: Task) -> tuple[Metric, ...]:
        return supervised_metrics(task)

    def score(self, encoder: Encoder, context: Context) -> Outcome:
        train, val, test = segmentation_splits(
            context.data,
            context.label_fraction,
            context.settings.image_size,
            context.device,
            subset_seed=context.subset_seed,
        )
        head = fit_clusters(encoder, train, context.settings, context.generator)
        foreground, val_dice = foreground_clusters(assign(encoder, head, val), val.masks, context.settings.clusters)
        predicted = foreground.to(context.device)[assign(encoder, head, test)]
        return Outcome(
            scores=mask_scores(predicted, test),
            selection=Selection(epoch=None, val_loss=1 - val_dice, val_loss_name="1 - validation dice"),
            seconds=0.0,
        )


@hookimpl
def ssl_bench_register_protocols(register):
    register(Clustering)
