"""DetCon-S (Hénaff et al., ICCV 2021) on the shared encoder, from lightly's projection head and DetCon-S loss.

SimCLR on regions: the deepest feature map of each view is averaged within each segment of an unsupervised
over-segmentation of the source image (carried through the views' crops and flips), and the same segment
in the two views of an image is a positive pair; every other sampled segment is a negative.

The over-segmentation is computed once per pool image (:meth:`DetCon.pool_extras`) and cached with the
pool: k-means on colour and position from a regular grid of seeds (SLIC's clustering without its local
search window), on images shrunk to 64 x 64, standing in for DetCon's Felzenszwalb-Huttenlocher masks.

Schedules. ``demo``: enough to exercise the loop. ``paper``: Hénaff et al. train 1000 ImageNet epochs with
LARS at batch 4096 on 224 px views, 16 segments sampled per image, temperature 0.1; here LD's budget
(100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) with 32 source images per step, as for SimCLR.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from lightly.loss import DetConSLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_bench.api import Method, Stage, hookimpl, require_positive
from ssl_bench_methods._dense import ViewGeometry, dense_view, two_view_stages

# The over-segmentation is cached under the method's name and version only, so its settings are constants,
# not options: changing one needs a version bump.
#: k-means starts from a SEEDS_PER_SIDE x SEEDS_PER_SIDE grid of seeds, so no image has more segments.
SEEDS_PER_SIDE = 4
SEGMENTS = SEEDS_PER_SIDE**2
#: Side of the (square) masks, and of the shrunk images they are computed on.
MASK_SIZE = 64
#: Weight of position (in image widths) against colour (in [0, 1] per channel): higher gives rounder segments.
POSITION_WEIGHT = 1.5
KMEANS_ITERATIONS = 10
#: Images segmented at once: bounds memory on pools of tens of thousands of images.
CHUNK = 64
#: Masks are resampled onto a grid this much finer than the feature map, then averaged into area fractions.
MASK_SUPERSAMPLING = 4


def oversegment(images: np.ndarray) -> np.ndarray:
    """Segment labels ``uint8 (N, MASK_SIZE, MASK_SIZE)`` in ``[0, SEGMENTS)`` of ``uint8 (N, C, H, W)`` images."""
    return np.concatenate([_kmeans_segments(images[start : start + CHUNK]) for start in range(0, len(images), CHUNK)])


def _kmeans_segments(images: np.ndarray) -> np.ndarray:
    # A copy: pools are read-only memory maps, which torch will not wrap.
    pixels = F.adaptive_avg_pool2d(torch.tensor(images, dtype=torch.float32) / 255, MASK_SIZE)
    centres_1d = (torch.arange(MASK_SIZE) + 0.5) / MASK_SIZE
    y, x = torch.meshgrid(centres_1d, centres_1d, indexing="ij")
    position = POSITION_WEIGHT * torch.stack([x, y]).expand(len(pixels), 2, MASK_SIZE, MASK_SIZE)
    features = torch.cat([pixels, position], dim=1).flatten(start_dim=2).transpose(1, 2)  # (N, P, F)
    seed_1d = ((torch.arange(SEEDS_PER_SIDE) + 0.5) * MASK_SIZE / SEEDS_PER_SIDE).long()
    centres = features[:, (seed_1d[:, None] * MASK_SIZE + seed_1d).flatten()]
    labels = torch.cdist(features, centres).argmin(dim=2)
    for _ in range(KMEANS_ITERATIONS):
        members = F.one_hot(labels, SEGMENTS).float()  # (N, P, K)
        counts = members.sum(dim=1).unsqueeze(2)
        # A centre that lost all its pixels stays where it was.
        centres = torch.where(counts > 0, members.transpose(1, 2) @ features / counts.clamp_min(1), centres)
        labels = torch.cdist(features, centres).argmin(dim=2)
    return labels.view(-1, MASK_SIZE, MASK_SIZE).to(torch.uint8).numpy()


def segment_areas(segments: torch.Tensor, geometry: ViewGeometry, height: int, width: int) -> torch.Tensor:
    """(B, SEGMENTS, height, width): the fraction of each cell of a view's feature map that each segment covers."""
    labels = geometry.warp(
        segments.unsqueeze(1).float(), MASK_SUPERSAMPLING * height, MASK_SUPERSAMPLING * width, "nearest"
    )
    members = F.one_hot(labels.squeeze(1).long(), SEGMENTS).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(members, MASK_SUPERSAMPLING)


@dataclass(frozen=True)
class DetConOptions:
    temperature: float = 0.1
    #: segments drawn per image and view (with replacement, among those both views show)
    samples: int = 16
    projection_dim: int = 128

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "samples", "projection_dim"), "detcon")


class DetConModel(nn.Module):
    def __init__(self, encoder: nn.Module, projection_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        channels = encoder.feature_info[-1].channels
        self.projection = SimCLRProjectionHead(channels, 4 * channels, projection_dim)

    def forward(
        self, views: torch.Tensor, segments: torch.Tensor, geometry: ViewGeometry
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per segment of the source images (labels ``segments``): the deepest feature averaged over its part
        of each view (B, SEGMENTS, C), zero where it is out of view, and that part's area in feature cells."""
        deepest = self.encoder(views)[-1]
        coverage = segment_areas(segments, geometry, *deepest.shape[-2:])
        areas = coverage.sum(dim=(2, 3))
        sums = torch.einsum("bkhw,bchw->bkc", coverage, deepest)
        return sums / areas.unsqueeze(2).clamp_min(torch.finfo(sums.dtype).eps), areas

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, M, C) pooled features -> (B, M, D) projections."""
        return self.projection(pooled.flatten(end_dim=1)).view(*pooled.shape[:2], -1)


def sample_segments(shared: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """(B, samples) segment ids drawn uniformly, with replacement, among those that both views of an image
    show (``shared``, bool (B, SEGMENTS)); an image whose views share none (disjoint crops) draws from all."""
    weights = torch.where(shared.any(dim=1, keepdim=True), shared, True).float().cpu()
    return torch.multinomial(weights, samples, replacement=True, generator=generator).to(shared.device)


def _uint8(images: torch.Tensor) -> np.ndarray:
    """The core's float images back to the pool's uint8 values (exact: they were divided by 255)."""
    return (images * 255).round().to(torch.uint8).cpu().numpy()


class DetCon(Method):
    name = "detcon"
    bf16_safe = True
    description = "DetCon-S: contrast of segment-pooled features across views (lightly head and DetCon-S loss)."
    Options = DetConOptions

    def __init__(self, options: DetConOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = DetConSLoss(temperature=self.options.temperature, gather_distributed=False)

    def stages(self, scale: str) -> list[Stage]:
        return two_view_stages(self.name, scale)

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        return DetConModel(encoder, self.options.projection_dim)

    def pool_extras(self, images: np.ndarray) -> np.ndarray:
        return oversegment(images)

    def training_step(
        self,
        model: nn.Module,
        images: torch.Tensor,
        stage: Stage,
        generator: torch.Generator,
        extras: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``extras``: the pool's cached segments of ``images``, which the core (pretraining and ``ssl-bench
        check``) always passes; a direct call without them segments the batch here."""
        segments = extras if extras is not None else torch.from_numpy(oversegment(_uint8(images))).to(images.device)
        pooled, areas = [], []
        for _ in range(2):
            views, geometry = dense_view(images, stage.image_size, generator)
            view_pooled, view_areas = model(views, segments, geometry)
            pooled.append(view_pooled)
            areas.append(view_areas)
        sampled = sample_segments((areas[0] > 0) & (areas[1] > 0), self.options.samples, generator)
        index = sampled.unsqueeze(2).expand(-1, -1, pooled[0].shape[2])
        projections = [model.project(view_pooled.gather(1, index)) for view_pooled in pooled]
        return self.criterion(*projections, sampled, sampled)


@hookimpl
def ssl_bench_register_methods(register):
    register(DetCon)
