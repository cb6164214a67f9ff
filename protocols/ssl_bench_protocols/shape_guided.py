"""``shape-guided``: segmentation without target labels, from frozen features, unlabelled images and shape masks.

After LD's shape-guided segmentation (Chen et al., TPAMI 2023): LD's clustering head with K = 8 clusters trained
on unlabelled images by region discrimination and entropy, and masks of the same structure from another source
(the paper: vessel masks of OCTA or DSA images) that say which cluster is the structure, judged by a
discriminator. The paper trains the whole LD network with an adversarial loss that pushes cluster 0 towards the
masks; here every method's encoder stays frozen and only a light head is trained, so that every method is scored
the same way, and the discriminator does not train the head: it picks the cluster. It measures whether
pretraining gave the target structure features of its own, that a shape prior can pick out without a label.

Why the discriminator picks rather than trains: on features that are the vessel mask itself (phantoms,
``tests/test_shape_guided.py``) the picked cluster scores test Dice 0.85-0.88 in three seeds of three, but an
adversarial loss on a light head over frozen features is an unstable game: from the start (the paper's recipe,
with an R1 penalty) channel 0 stayed empty in two seeds of three; as a refinement after the clustering (weight 5)
it lowered the picked cluster's Dice from 0.88 to 0.79 and from 0.86 to 0.22 in two seeds of three. Picking is
stable and keeps what the features hold.

Data. Every training image of the task, unlabelled (the label fraction changes nothing: every fraction gives the
same scores; target masks are read only to score the test split). The shapes are the training masks of the
task's :attr:`~ssl_bench.api.Task.shape_source` (:attr:`~ssl_bench.api.Context.shapes`), resized to the working
size (bilinear, > 0.5) and flipped at random.

Head. The encoder's stages, each L2-normalised per pixel (computed once: the encoder is frozen, in eval mode, and
the images are not augmented), mixed by a 1x1 conv of every stage upsampled to the working size
(:class:`~ssl_bench_protocols._multiscale.MultiScaleLinear`), BatchNorm and ReLU, then LD's clustering head
(conv3x3, BatchNorm, ReLU, conv3x3) to K logits, sigmoid and L1-normalised per pixel. Trained by
``10 L_ld + 0.1 L_ent``, LD's weights: L_ld is LD's region discrimination (temperature 0.2) on region features of
the frozen features (per stage, the mean of the unit features weighted by the assignments averaged over each
stage cell, L2-normalised, the stages concatenated with equal weight); L_ent is LD's mean binary entropy of the
assignments.

Shape critic. A discriminator (three 4x4 convs of stride 2, a 22 px receptive field, averaged over the image: it
judges the statistics of local shapes, not their layout, which differs between the source and the target) learns
to tell the shape masks (real) from the trained head's cluster maps of the training images (fake: a random
channel of a random image), by binary cross-entropy plus an R1 penalty on the real masks (Mescheder et al., 2018),
Adam at the head's lr. The cluster whose maps it finds most real on average (mean logit over the training images)
is the prediction; the test split is scored on it. No target label is read, so the last epoch is scored.

Metrics: per-image Dice (the headline) and IoU at 0.5 of the picked cluster on the test split, at the working size.

Settings. ``demo``: 96 px, 8 clusters, 40 epochs of batches of 4, Adam 1e-3, 200 critic steps: about a minute
per job on a CPU core. ``paper``/``matched``: 512 px (LD's transfer size), 8 clusters, 100 epochs (LD's transfer
epochs) of the task's paper batch size (LD: 2), Adam 1e-3, 500 critic steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from time import perf_counter

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.api import (
    Budget,
    ConfigError,
    Context,
    Encoder,
    FrozenFeatureProtocol,
    Metric,
    Outcome,
    Selection,
    Task,
    augment,
    hookimpl,
    require_whole_numbers,
)
from ssl_bench.api.augment import normalize
from ssl_bench.api.nets import FeatureInfo
from ssl_bench.api.regions import cluster_assignment, entropy_loss, local_discrimination_loss, region_features
from ssl_bench.api.supervised import mask_scores, resize_split, seeded_init, standard_settings, supervised_metrics
from ssl_bench_protocols._multiscale import MultiScaleLinear

# LD's published loss weights and region-discrimination temperature (the ld method's defaults).
LD_WEIGHT = 10.0
ENTROPY_WEIGHT = 0.1
LD_TEMPERATURE = 0.2
# The R1 penalty's weight: the critic's squared gradient on real masks keeps its judgement smooth.
R1_WEIGHT = 1.0
# Channels of the head between the multi-scale mix and the K logits: LD's head on a light decoder.
_HIDDEN = 16
# Adam's betas for the critic: the usual discriminator choice.
_CRITIC_BETAS = (0.5, 0.999)
# Inference batch: the encoder and the head are in eval mode, so it changes no result.
_BATCH_SIZE = 16


@dataclass(frozen=True)
class ShapeGuidedSettings:
    """Working size (px), clusters K, the head's epochs over the training images, batch size (the head's and the
    critic's), Adam's lr (both), and the critic's steps."""

    image_size: int
    clusters: int
    epochs: int
    batch_size: int
    lr: float
    critic_steps: int

    def __post_init__(self) -> None:
        least = {"image_size": 1, "clusters": 2, "epochs": 1, "batch_size": 1, "critic_steps": 1}
        require_whole_numbers(self, least, "shape-guided")
        if not self.lr > 0:
            raise ConfigError(f"shape-guided setting lr must be > 0, got {self.lr!r}")


class ClusterHead(nn.Module):
    """Unit stage features to LD's soft assignments ``(N, K, H, W)``: a multi-scale 1x1 mix, then LD's head."""

    def __init__(self, feature_info: list[FeatureInfo], clusters: int) -> None:
        super().__init__()
        self.mix = MultiScaleLinear(feature_info, _HIDDEN)
        self.head = nn.Sequential(
            nn.BatchNorm2d(_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Conv2d(_HIDDEN, _HIDDEN, 3, padding=1),
            nn.BatchNorm2d(_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Conv2d(_HIDDEN, clusters, 3, padding=1),
        )

    def forward(self, stages: list[Tensor], size: tuple[int, int]) -> Tensor:
        return cluster_assignment(self.head(self.mix(stages, size)))


def discriminator() -> nn.Sequential:
    """One logit per one-channel mask: three 4x4 convs of stride 2 (a 22 px receptive field), averaged over the
    image, then linear. It judges the statistics of local shapes, wherever they lie."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


@torch.no_grad()
def unit_stages(encoder: Encoder, images: Tensor) -> list[Tensor]:
    """Each stage's features of ``uint8 (N, C, H, W)`` images, L2-normalised per pixel, at the stage's size."""
    batches = [
        encoder(normalize(images[i : i + _BATCH_SIZE].float() / 255)) for i in range(0, len(images), _BATCH_SIZE)
    ]
    return [F.normalize(torch.cat(stage), dim=1) for stage in zip(*batches, strict=True)]


def region_discrimination_loss(stages: list[Tensor], assignments: Tensor) -> Tensor:
    """LD's L_ld on the frozen ``stages``: each stage's region features from the assignments averaged over its
    cells (exact where a cell's features are constant over it), the stages weighted equally."""
    regions = [region_features(stage, F.adaptive_avg_pool2d(assignments, stage.shape[-2:])) for stage in stages]
    return local_discrimination_loss(torch.cat(regions, dim=2) / math.sqrt(len(regions)), LD_TEMPERATURE)


def resize_shapes(shapes: Tensor, size: int, device: torch.device) -> Tensor:
    """Masks ``bool (M, H, W)`` as ``float (M, 1, size, size)`` on ``device``, resized as task masks are."""
    masks = shapes.to(device).float().unsqueeze(1)
    return (F.interpolate(masks, size=(size, size), mode="bilinear", antialias=True) > 0.5).float()


def train_head(stages: list[Tensor], settings: ShapeGuidedSettings, generator: torch.Generator) -> ClusterHead:
    """The head trained by LD's clustering losses on frozen ``stages`` of the training images, in eval mode."""
    size = (settings.image_size, settings.image_size)
    feature_info = [FeatureInfo(stage.shape[1], 1) for stage in stages]  # only the channel counts are read
    head = seeded_init(lambda: ClusterHead(feature_info, settings.clusters), generator).to(stages[0].device)
    optimizer = torch.optim.Adam(head.parameters(), lr=settings.lr)
    head.train()
    for _ in range(settings.epochs):
        for rows in torch.randperm(len(stages[0]), generator=generator).split(settings.batch_size):
            batch = [stage[rows.to(stage.device)] for stage in stages]
            assignments = head(batch, size)
            loss = LD_WEIGHT * region_discrimination_loss(batch, assignments)
            loss = loss + ENTROPY_WEIGHT * entropy_loss(assignments)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return head.eval()


@torch.no_grad()
def assign(head: ClusterHead, stages: list[Tensor], size: int) -> Tensor:
    """The head's assignments ``(N, K, size, size)``, batch by batch."""
    batches = [
        head([stage[i : i + _BATCH_SIZE] for stage in stages], (size, size))
        for i in range(0, len(stages[0]), _BATCH_SIZE)
    ]
    return torch.cat(batches)


def train_critic(maps: Tensor, shapes: Tensor, settings: ShapeGuidedSettings, generator: torch.Generator) -> nn.Module:
    """A discriminator trained to tell random flipped ``shapes`` (real) from random channels of random images of
    the cluster ``maps (N, K, H, W)`` (fake), with the R1 penalty on the real, in eval mode."""
    critic = seeded_init(discriminator, generator).to(maps.device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=settings.lr, betas=_CRITIC_BETAS)
    for _ in range(settings.critic_steps):
        drawn = torch.randint(len(shapes), (settings.batch_size,), generator=generator).to(shapes.device)
        real = augment.random_flip(shapes[drawn], generator, horizontal=True, vertical=True).requires_grad_()
        rows, channels = (torch.randint(n, (settings.batch_size,), generator=generator) for n in maps.shape[:2])
        fake = maps[rows.to(maps.device), channels.to(maps.device)].unsqueeze(1)
        judged_real, judged_fake = critic(real), critic(fake)
        (slope,) = torch.autograd.grad(judged_real.sum(), real, create_graph=True)
        loss = (
            F.binary_cross_entropy_with_logits(judged_real, torch.ones_like(judged_real))
            + F.binary_cross_entropy_with_logits(judged_fake, torch.zeros_like(judged_fake))
            + R1_WEIGHT / 2 * slope.square().flatten(1).sum(1).mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return critic.eval()


@torch.no_grad()
def realness(critic: nn.Module, maps: Tensor) -> Tensor:
    """The critic's mean logit for each channel's maps, ``(K,)``: higher is more like the shapes."""
    return torch.stack([critic(maps[:, k : k + 1]).mean() for k in range(maps.shape[1])])


class ShapeGuided(FrozenFeatureProtocol):
    name = "shape-guided"
    description = (
        "no target labels: LD's clustering head on frozen features, the cluster picked by another source's masks"
    )
    task_kinds = ("segmentation",)
    # 40 epochs of a critic on a few demo images score Dice 0.00-0.01: not worth the quickstart's 95 s.
    signal_at_demo_scale = False
    frozen_encoder = True
    uses_shapes = True

    def settings(self, budget: Budget, task: Task) -> ShapeGuidedSettings:
        standard = standard_settings(budget, task)  # the supervised protocols' input size and batch size
        demo = budget.scale == "demo"
        return ShapeGuidedSettings(
            image_size=standard.image_size,
            clusters=8,
            epochs=40 if demo else 100,
            batch_size=standard.batch_size,
            lr=1e-3,
            critic_steps=200 if demo else 500,
        )

    def metrics(self, task: Task) -> tuple[Metric, ...]:
        return supervised_metrics(task)

    def score(self, encoder: Encoder, context: Context) -> Outcome:
        if context.shapes is None:
            raise ConfigError(f"shape-guided needs shape masks (Context.shapes) for {context.task.name}; got none")
        settings, device, size = context.settings, context.device, context.settings.image_size
        train = resize_split(context.data.train, size, device)
        test = resize_split(context.data.test, size, device)
        stages = unit_stages(encoder, train.images)
        trained = perf_counter()
        head = train_head(stages, settings, context.generator)
        trained = perf_counter() - trained
        maps = assign(head, stages, size)
        critic = train_critic(maps, resize_shapes(context.shapes, size, device), settings, context.generator)
        judged = realness(critic, maps)
        picked = int(judged.argmax())
        predicted = assign(head, unit_stages(encoder, test.images), size)[:, picked]
        return Outcome(
            scores=mask_scores(predicted, test),
            selection=Selection(
                epoch=settings.epochs,
                val_loss=None,
                val_loss_name=f"none: no target label; the last epoch, cluster {picked} of {settings.clusters} "
                f"(the critic's mean logit {judged[picked]:.2f}, the next {judged.topk(2).values[1]:.2f})",
            ),
            seconds=0.0,
            train_images_per_second=len(train) * settings.epochs / trained,
        )


@hookimpl
def ssl_bench_register_protocols(register):
    register(ShapeGuided)
