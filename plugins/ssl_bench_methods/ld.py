"""Local Discrimination (LD; Chen et al., IPMI 2021 and IEEE TPAMI 2023) as described in ``ld-spec.md``.

A U-Net maps every pixel to an L2-normalised embedding z (D = 32) and, in stage 2, to a soft assignment a
over K = 16 clusters. Stage 1 ("pd-mixup") discriminates 8x8 patch features between two views of each image
(L_pd) and between mixup images and their mixed targets (L_mix). Stage 2 ("ld") adds region discrimination
against batch cluster centres (L_ld) and an entropy term that sharpens the assignments (L_ent).

Faithful to the authors' released code: same maths, random distributions and hyper-parameters, including
its quirk that the "flip" of view 2 is a 180-degree rotation (``true_flip`` makes it a mirror). Views are
made in batch on tensors, the network runs under bf16 autocast on CUDA, and the losses run in fp32.
As in the released code, the stage-2 checkpoint with the lowest held-out loss is exported
(``select_best_checkpoint``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.api import ConfigError, Method, Stage, augment, hookimpl, require_positive
from ssl_bench.api.nets import UNet
from ssl_bench.api.regions import (
    NORM_EPS,
    at_least_fp32,
    cluster_assignment,
    entropy_loss,
    l2_normalize,
    local_discrimination_loss,
    region_features,
)
from ssl_bench_methods._criteria import batch_criterion

PD_STAGE = "pd-mixup"
LD_STAGE = "ld"
MIX_WEIGHT_RANGE = (0.2, 0.8)
LR_HALVING_EPOCHS = 10


@dataclass(frozen=True)
class LDOptions:
    """LD's hyper-parameters; the defaults are the published ones."""

    embedding_dim: int = 32
    clusters: int = 16
    #: patch features are pooled on a grid x grid layout
    grid: int = 8
    ld_weight: float = 10.0
    entropy_weight: float = 0.1
    batch_temperature: float = 0.1
    ld_temperature: float = 0.2
    #: mirror view 2 left-right instead of the released code's 180-degree rotation
    true_flip: bool = False

    def __post_init__(self) -> None:
        require_positive(self, ("embedding_dim", "clusters", "grid", "batch_temperature", "ld_temperature"), "LD")


# --- views ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LDViews:
    """The network input of one step of B samples, and what the losses need to line its outputs up.

    ``images``: (5B, C, S, S), normalised, ordered v1(I1), v1(I2), v2(I1), v2(I2), mix (B images each).
    ``view2_ops``: (2B,) the op that turned each view 2: 4 * flip + quarter turns (see :func:`apply_view_ops`).
    ``mix_weights``: (B,) the weight w of I1 in each mix = w v1(I1) + (1 - w) v1(I2).
    """

    images: Tensor
    view2_ops: Tensor
    mix_weights: Tensor

    @property
    def samples(self) -> int:
        return self.mix_weights.shape[0]


def make_views(sources: Tensor, size: int, generator: torch.Generator, true_flip: bool = False) -> LDViews:
    """LD's views of ``sources`` (2B, C, H, W) in [0, 1]: I1 = the first B images, I2 = the last B.

    Each source gets one geometric augmentation shared by its two views; each view then its own small
    rotation, colour jitter and grayscale; view 2 is turned by a recorded op; the mix is made in [0, 1].
    """
    if sources.shape[0] % 2:  # e.g. the last validation batch: reuse the first image to complete the pairs
        sources = torch.cat([sources, sources[:1]])
    samples = sources.shape[0] // 2
    shared = _shared_geometry(sources, size, generator)
    first, second = _appearance(torch.cat([shared, shared]), generator).chunk(2)
    flips = torch.randint(2, (2 * samples,), generator=generator)
    ops = 4 * flips + torch.randint(4, (2 * samples,), generator=generator)
    low, high = MIX_WEIGHT_RANGE
    weights = low + (high - low) * torch.rand(samples, generator=generator, dtype=torch.float64)
    # Non-blocking copies of pageable CPU memory return at once: no wait on the device.
    ops = ops.to(sources.device, non_blocking=True)
    weights = weights.to(sources.device, sources.dtype, non_blocking=True)
    second = apply_view_ops(second, ops, true_flip)
    w = weights.view(-1, 1, 1, 1)
    mix = w * first[:samples] + (1 - w) * first[samples:]
    return LDViews(augment.normalize(torch.cat([first, second, mix])), ops, weights)


def _shared_geometry(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    images = augment.random_flip(images, generator, horizontal=True, vertical=True)
    images = augment.random_rotation(images, 180.0, generator, mode="nearest")
    return augment.random_resized_crop(images, size, generator, scale=(0.9, 1.0))


def _appearance(images: Tensor, generator: torch.Generator) -> Tensor:
    images = augment.random_rotation(images, 2.0, generator, mode="nearest")
    images = augment.color_jitter(images, generator, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.02)
    return augment.random_grayscale(images, generator, p=0.2)


def _view_op_sources(size: int, device: torch.device, true_flip: bool) -> Tensor:
    """(8, size * size): for each op, the flat index of the source pixel of every output pixel."""
    pixels = torch.arange(size * size, device=device).view(size, size)
    flipped = pixels.flip(-1) if true_flip else pixels.flip(-2, -1)
    turned = [torch.rot90(grid, turns, dims=(-2, -1)) for grid in (pixels, flipped) for turns in range(4)]
    return torch.stack(turned).flatten(1)


def _gather_pixels(images: Tensor, sources: Tensor) -> Tensor:
    """Per image n, output pixel i = input pixel ``sources[n, i]`` (all channels)."""
    flat = images.flatten(2)
    return flat.gather(2, sources.unsqueeze(1).expand(-1, flat.shape[1], -1)).view_as(images)


def apply_view_ops(images: Tensor, ops: Tensor, true_flip: bool = False) -> Tensor:
    """Turn each square image (N, C, S, S) by its op, 4 * flip + quarter turns: if flip, flip both axes
    (the released code's half turn) or, with ``true_flip``, mirror left-right; then rot90 counter-clockwise."""
    return _gather_pixels(images, _view_op_sources(images.shape[-1], images.device, true_flip)[ops])


def undo_view_ops(images: Tensor, ops: Tensor, true_flip: bool = False) -> Tensor:
    """The inverse of :func:`apply_view_ops`."""
    return _gather_pixels(images, _view_op_sources(images.shape[-1], images.device, true_flip)[ops].argsort(dim=1))


# --- network --------------------------------------------------------------------------------------


class _PixelEmbedding(torch.autograd.Function):
    """:func:`l2_normalize` over channels that saves its output, not its input, for backward: the
    output is kept anyway (the region features read it), so the normalisation costs no map of its own."""

    @staticmethod
    def forward(ctx, features: Tensor) -> Tensor:
        with torch.autocast(features.device.type, enabled=False):  # stay in the features' precision
            norm = torch.linalg.vector_norm(features, dim=1, keepdim=True)
            embeddings = features / (norm + NORM_EPS)
        ctx.save_for_backward(embeddings, norm)
        return embeddings

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        embeddings, norm = ctx.saved_tensors
        radial = (grad * embeddings).sum(dim=1, keepdim=True)
        # Where the norm is 0 the embedding is 0 too, and so is the radial term.
        return grad / (norm + NORM_EPS) - embeddings * radial / norm.clamp_min(torch.finfo(norm.dtype).tiny)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        _conv3x3(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        _conv3x3(out_channels, out_channels),
    )


class LDNetwork(nn.Module):
    """U-Net with LD's embedding head and, when ``clusters`` is given (stage 2), its clustering head.

    Both stages name their shared parts alike, so the core carries stage 1's weights into stage 2.
    ``forward`` gives z (N, D, H, W), L2-normalised per pixel, and a (N, K, H, W), L1-normalised sigmoid
    scores per pixel, or None without the clustering head.
    """

    def __init__(self, encoder: nn.Module, embedding_dim: int, clusters: int | None) -> None:
        super().__init__()
        self.unet = UNet(encoder)
        self.embedding_head = _head(self.unet.out_channels, embedding_dim)
        self.clustering_head = _head(self.unet.out_channels, clusters) if clusters is not None else None

    @property
    def encoder(self) -> nn.Module:
        # A property, not a second registration, so that parameter names stay unique.
        return self.unet.encoder

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        features = self.unet(images)
        embeddings = _PixelEmbedding.apply(self.embedding_head(features))
        if self.clustering_head is None:
            return embeddings, None
        return embeddings, cluster_assignment(self.clustering_head(features))


# --- losses ---------------------------------------------------------------------------------------


def _rows(grid_features: Tensor) -> Tensor:
    """(N, D, G, G) -> (N * G * G, D), image by image, cells in row-major order."""
    return grid_features.flatten(2).transpose(1, 2).reshape(-1, grid_features.shape[1])


def patch_features(embeddings: Tensor, grid: int) -> Tensor:
    """L2-normalised means of z over a grid x grid layout of patches, in fp32: (N, D, grid, grid)."""
    return l2_normalize(at_least_fp32(F.adaptive_avg_pool2d(embeddings, grid)))


def patch_discrimination_loss(patches: Tensor, view2_ops: Tensor, temperature: float, true_flip: bool) -> Tensor:
    """L_pd on the patches (4B, D, G, G) of [v1(I1), v1(I2), v2(I1), v2(I2)]: a patch's positive is the
    same cell of the other view of its image, once view 2's op is undone on the grid."""
    first, second = patches.chunk(2)
    return batch_criterion(_rows(torch.cat([first, undo_view_ops(second, view2_ops, true_flip)])), temperature)


def mixup_loss(first_views: Tensor, mixes: Tensor, mix_weights: Tensor, temperature: float) -> Tensor:
    """L_mix: each mix patch (B, D, G, G) against the fixed target L2norm(w p(v1(I1)) + (1 - w) p(v1(I2))),
    from the patches of ``first_views`` (2B, D, G, G) = [v1(I1), v1(I2)]."""
    source1, source2 = first_views.detach().chunk(2)
    w = mix_weights.view(-1, 1, 1, 1)
    targets = l2_normalize(w * source1 + (1 - w) * source2)
    return batch_criterion(torch.cat([_rows(mixes), _rows(targets)]), temperature)


def ld_objective(embeddings: Tensor, assignments: Tensor | None, views: LDViews, options: LDOptions) -> Tensor:
    """L_pd + L_mix, plus ``ld_weight`` L_ld + ``entropy_weight`` L_ent given assignments, in fp32.

    ``embeddings`` and ``assignments`` are the network's outputs for ``views.images``; the mixes enter
    only L_mix.
    """
    non_mix = 4 * views.samples
    temperature = options.batch_temperature
    with torch.autocast(embeddings.device.type, enabled=False):
        patches = patch_features(embeddings, options.grid)
        loss = patch_discrimination_loss(patches[:non_mix], views.view2_ops, temperature, options.true_flip)
        loss = loss + mixup_loss(patches[: non_mix // 2], patches[non_mix:], views.mix_weights, temperature)
        if assignments is None:
            return loss
        assignments = assignments[:non_mix]
        regions = region_features(embeddings[:non_mix], assignments)
        loss = loss + options.ld_weight * local_discrimination_loss(regions, options.ld_temperature)
        return loss + options.entropy_weight * entropy_loss(assignments)


def ld_loss(model: nn.Module, views: LDViews, options: LDOptions, mixed_precision: bool = False) -> Tensor:
    """One step's loss: the network (under bf16 autocast if ``mixed_precision``), then the fp32 losses."""
    images = views.images
    if images.is_cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=mixed_precision):
        embeddings, assignments = model(images)
    return ld_objective(embeddings, assignments, views, options)


# --- the method -----------------------------------------------------------------------------------


class LocalDiscrimination(Method):
    name = "ld"
    description = "Local Discrimination (Chen et al. 2021): patch and mixup discrimination, then region clustering."
    Options = LDOptions
    # Per pair of sources the network sees two views of each and one mix.
    views_per_image = 2.5
    # The released code transfers the stage-2 checkpoint with the best validation loss.
    select_best_checkpoint = True

    def stages(self, scale: str) -> list[Stage]:
        """Published: 20 + 80 epochs x 1000 steps of 4 samples (8 sources) at 448 px; demo: 2 samples at 64 px,
        a few seconds per stage on 2 CPU cores."""
        if scale == "paper":
            return [
                Stage(PD_STAGE, epochs=20, steps_per_epoch=1000, batch_size=8, image_size=448, lr=1e-3),
                Stage(LD_STAGE, epochs=80, steps_per_epoch=1000, batch_size=8, image_size=448, lr=1e-3),
            ]
        return [
            Stage(PD_STAGE, epochs=2, steps_per_epoch=10, batch_size=4, image_size=64, lr=1e-3),
            Stage(LD_STAGE, epochs=2, steps_per_epoch=10, batch_size=4, image_size=64, lr=1e-3),
        ]

    def build_model(self, encoder: nn.Module, stage: Stage, channels: int) -> nn.Module:
        if stage.image_size % self.options.grid:
            raise ConfigError(f"LD's image size {stage.image_size} must be a multiple of its grid {self.options.grid}")
        clusters = self.options.clusters if stage.name == LD_STAGE else None
        return LDNetwork(encoder, self.options.embedding_dim, clusters)

    def configure_optimizer(
        self, model: nn.Module, stage: Stage
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam, halved every 10 epochs. The model is already on its device: on CUDA it goes
        channels_last (faster bf16 convolutions) and Adam is fused."""
        on_cuda = next(model.parameters()).is_cuda
        if on_cuda:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=stage.lr, fused=on_cuda)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=LR_HALVING_EPOCHS, gamma=0.5)

    def training_step(
        self, model: nn.Module, images: torch.Tensor, stage: Stage, generator: torch.Generator
    ) -> torch.Tensor:
        views = make_views(images, stage.image_size, generator, self.options.true_flip)
        return ld_loss(model, views, self.options, mixed_precision=images.is_cuda)


@hookimpl
def ssl_bench_register_methods(register):
    register(LocalDiscrimination)
