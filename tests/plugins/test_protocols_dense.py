"""The dense protocols: ``linear-seg`` (a 1x1-conv probe on multi-scale features) and ``clustering`` (k-means)."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fakes import CPU, NoiseEncoder, mean_dice, seeded_context
from ssl_bench_protocols._multiscale import MultiScaleLinear
from ssl_bench_protocols.clustering import (
    Clustering,
    cluster_head,
    kmeans_plus_plus,
    match_clusters,
    sample_pixels,
    spherical_kmeans,
)
from ssl_bench_protocols.linear_seg import LinearSeg, LinearSegModel

from ssl_bench.api import ConfigError, Context, Encoder, SegmentationData, SegmentationSplit, Task
from ssl_bench.api.nets import FeatureInfo, create_encoder
from ssl_bench.api.supervised import SupervisedSettings, fit
from ssl_bench.budget import BUILT_IN
from ssl_bench.supervised.segmentation import SegmentationProblem

SIZE = 32


def squares(n: int, seed: int) -> SegmentationSplit:
    """RGB images: a bright square (190..220 per channel) of random size and place on a dark noisy background
    (30..59 per channel); the mask is the square."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    for i in range(n):
        side = int(torch.randint(SIZE // 4, SIZE // 2, (1,), generator=generator))
        top, left = (int(v) for v in torch.randint(0, SIZE - side, (2,), generator=generator))
        masks[i, top : top + side, left : left + side] = True
    noise = torch.randint(0, 30, (n, 3, SIZE, SIZE), generator=generator)
    images = (30 + noise + 160 * masks.unsqueeze(1)).to(torch.uint8)
    return SegmentationSplit(images, masks, tuple(f"case{seed}_{i}" for i in range(n)))


DATA = SegmentationData(train=squares(15, seed=0), test=squares(5, seed=1))


class Squares(Task):
    name = "squares"
    description = "bright squares on a dark background"
    modality = "test"
    channels = 3
    target = "squares"
    rotation_degrees = 30.0

    def load(self, data_root: Path | None) -> SegmentationData:
        return DATA


class Identity(Encoder):
    """The image itself as the one feature, at full resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.in_chans = 3
        self.feature_info = [FeatureInfo(3, 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


class ImagePyramid(Identity):
    """The image at full resolution and average-pooled by 2: two stages that are known functions of the image."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(3, 1), FeatureInfo(3, 2)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, F.avg_pool2d(x, 2)]


def vgg() -> Encoder:
    torch.manual_seed(123)  # the same random encoder in every test; the context's generator drives the rest
    return create_encoder(in_chans=3)


def context(protocol, encoder: Encoder, seed: int = 0, **overrides) -> Context:
    task = Squares()
    settings = dataclasses.replace(protocol.settings(BUILT_IN["demo"], task), image_size=SIZE, **overrides)
    return seeded_context(encoder, DATA, task, settings, seed, pretrained=False)


# --- Matching clusters to the foreground ---------------------------------------------------------------------------


def test_matching_picks_the_foreground_set_of_best_pooled_dice():
    # Cluster sizes 10, 6, 4 pixels with 1, 5, 4 foreground pixels; 10 foreground pixels in all.
    # Dice 2|P&T| / (|P| + 10) of every set: {} 0, {0} 2/20 = .1, {1} 10/16 = .625, {2} 8/14 = .571,
    # {0,1} 12/26 = .462, {0,2} 10/24 = .417, {1,2} 18/20 = .9, {0,1,2} 20/30 = .667. Best: clusters 1 and 2.
    foreground, dice = match_clusters(torch.tensor([10, 6, 4]), torch.tensor([1, 5, 4]), foreground=10)
    assert foreground.tolist() == [False, True, True]
    assert dice == pytest.approx(0.9)


def test_matching_equals_exhaustive_search():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        sizes = torch.randint(1, 50, (6,), generator=generator)
        overlaps = (sizes * torch.rand(6, generator=generator)).long()
        total = int(overlaps.sum())

        def dice(subset: tuple[int, ...], sizes=sizes, overlaps=overlaps, total=total) -> float:
            return 2 * float(overlaps[list(subset)].sum()) / (float(sizes[list(subset)].sum()) + total)

        subsets = [s for r in range(7) for s in itertools.combinations(range(6), r)]
        best = max(dice(s) for s in subsets)
        chosen, found = match_clusters(sizes, overlaps, total)
        assert found == pytest.approx(best)
        assert dice(tuple(chosen.nonzero().flatten().tolist())) == pytest.approx(best)


def test_matching_without_foreground_predicts_nothing():
    foreground, dice = match_clusters(torch.tensor([5, 3]), torch.tensor([0, 0]), foreground=0)
    assert foreground.tolist() == [False, False]
    assert dice == 1.0


# --- k-means ---------------------------------------------------------------------------------------------------------


def separated_points() -> tuple[torch.Tensor, torch.Tensor]:
    """20 unit points near each of the three axes of R^3, and which axis each is near."""
    generator = torch.Generator().manual_seed(0)
    truth = torch.arange(3).repeat_interleave(20)
    points = F.one_hot(truth, 3).float() + 0.05 * torch.randn(60, 3, generator=generator)
    return F.normalize(points, dim=1), truth


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_recovers_well_separated_clusters(seed):
    points, truth = separated_points()
    centroids = spherical_kmeans(points, 3, iterations=10, generator=torch.Generator().manual_seed(seed))
    found = (points @ centroids.T).argmax(1)
    # One cluster per group, whatever its number: the pairs (truth, found) are a one-to-one map.
    assert len(set(zip(truth.tolist(), found.tolist(), strict=True))) == 3
    assert len(set(found.tolist())) == 3
    # Each centroid is its group's mean direction: spherical k-means' fixed point.
    for group in range(3):
        members = points[truth == group]
        torch.testing.assert_close(centroids[found[truth == group][0]], F.normalize(members.mean(0), dim=0))


def test_kmeans_plus_plus_is_deterministic_given_the_generator():
    points = F.normalize(torch.randn(200, 4, generator=torch.Generator().manual_seed(0)), dim=1)

    def init(seed: int) -> torch.Tensor:
        return kmeans_plus_plus(points, 4, torch.Generator().manual_seed(seed))

    assert torch.equal(init(1), init(1))
    assert not torch.equal(init(1), init(2))


@pytest.mark.parametrize("seed", range(10))
def test_kmeans_plus_plus_never_repeats_a_point_while_another_is_left(seed):
    a, b = F.normalize(torch.tensor([[1.0, 0.2]]), dim=1), F.normalize(torch.tensor([[0.1, 1.0]]), dim=1)
    points = torch.cat([a.repeat(50, 1), b])
    chosen = kmeans_plus_plus(points, 2, torch.Generator().manual_seed(seed))
    assert {tuple(row) for row in chosen.tolist()} == {tuple(a[0].tolist()), tuple(b[0].tolist())}
    # More clusters than distinct points: the rest coincide with chosen ones instead of failing.
    assert len(kmeans_plus_plus(points, 3, torch.Generator().manual_seed(seed))) == 3


# --- Multi-scale features --------------------------------------------------------------------------------------------


def test_sample_pixels_reads_the_bilinear_upsampling():
    feature = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])  # 2 x 2, sampled on a 4 x 4 image
    # Pixel (row, col) of the 4 x 4 image sits at (row + .5) / 2 - .5 in the 2 x 2 one, clamped to the border:
    # (0, 0) -> (0, 0): 0. (1, 1) -> (.25, .25): .75^2 * 0 + .75 * .25 * (1 + 2) + .25^2 * 3 = .75.
    # (1, 2) -> (.25, .75): row 0 gives .25 * 0 + .75 * 1 = .75, row 1 .25 * 2 + .75 * 3 = 2.75; .75 * .75 + .25 *
    # 2.75 = 1.25. (3, 3) -> (1, 1): 3.
    rows, cols = torch.tensor([[0, 1, 1, 3]]), torch.tensor([[0, 1, 2, 3]])
    sampled = sample_pixels([feature], rows, cols, size=(4, 4))
    torch.testing.assert_close(sampled, torch.tensor([[0.0], [0.75], [1.25], [3.0]]))


def test_sample_pixels_equals_upsampling_then_indexing():
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 3, 12, 16, generator=generator), torch.randn(2, 5, 3, 4, generator=generator)]
    rows, cols = torch.randint(12, (2, 7), generator=generator), torch.randint(16, (2, 7), generator=generator)
    upsampled = torch.cat([F.interpolate(f, size=(12, 16), mode="bilinear", align_corners=False) for f in features], 1)
    expected = torch.stack([upsampled[i, :, rows[i], cols[i]].T for i in range(2)]).flatten(0, 1)
    torch.testing.assert_close(sample_pixels(features, rows, cols, size=(12, 16)), expected)


def upsampled_concatenation(features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    return torch.cat([F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features], dim=1)


def random_features() -> tuple[list[FeatureInfo], list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    info = [FeatureInfo(3, 1), FeatureInfo(5, 2), FeatureInfo(4, 4)]
    return info, [torch.randn(2, i.channels, 16 // i.reduction, 16 // i.reduction, generator=generator) for i in info]


def test_multiscale_linear_is_a_1x1_conv_on_the_upsampled_concatenation():
    info, features = random_features()
    head = MultiScaleLinear(info, outputs=2)
    torch.nn.init.normal_(head.bias)
    weight = torch.cat([conv.weight for conv in head.convs], dim=1)
    expected = F.conv2d(upsampled_concatenation(features, (16, 16)), weight, head.bias)
    torch.testing.assert_close(head(features, size=(16, 16)), expected)


def test_cluster_head_scores_standardised_features_against_centroids():
    info, features = random_features()
    generator = torch.Generator().manual_seed(1)
    centroids = F.normalize(torch.randn(4, 12, generator=generator), dim=1)
    mean, std = torch.randn(12, generator=generator), torch.rand(12, generator=generator) + 0.5
    standardised = (upsampled_concatenation(features, (16, 16)) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    expected = torch.einsum("nchw,kc->nkhw", standardised, centroids)
    with torch.no_grad():
        torch.testing.assert_close(cluster_head(info, centroids, mean, std)(features, size=(16, 16)), expected)


# --- linear-seg ------------------------------------------------------------------------------------------------------


def test_linear_seg_model_returns_one_logit_per_pixel_at_any_size():
    model = LinearSegModel(create_encoder(in_chans=1)).eval()
    assert model(torch.randn(2, 1, 40, 48)).shape == (2, 1, 40, 48)


def test_linear_seg_trains_the_probe_only():
    encoder = vgg()
    model = LinearSegModel(copy.deepcopy(encoder))
    head = copy.deepcopy(model.head.state_dict())
    settings = SupervisedSettings(SIZE, epochs=2, batch_size=4, lr=1e-2)
    kind = SegmentationProblem(
        DATA, settings, label_fraction=1.0, subset_seed=0, flips=True, rotation_degrees=30.0, device=CPU
    )
    fit(kind, model, epochs=2, batch_size=4, lr=1e-2, train_encoder=False, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in model.encoder.parameters())
    for key, value in encoder.state_dict().items():  # weights and BatchNorm statistics alike
        assert torch.equal(model.encoder.state_dict()[key], value), key
    assert not torch.equal(model.head.state_dict()["bias"], head["bias"])
    # 12 training rows in batches of 4, for 2 epochs: the probe's standardisation saw 6 batches.
    assert all(int(norm.num_batches_tracked) == 6 for norm in model.norms)


def test_linear_seg_learns_a_mask_its_features_reveal():
    assert mean_dice(LinearSeg().run(context(LinearSeg(), ImagePyramid(), epochs=30, lr=5e-2))) > 0.95
    assert mean_dice(LinearSeg().run(context(LinearSeg(), NoiseEncoder(channels=3, seed=7), epochs=30, lr=5e-2))) < 0.6


# --- Both protocols end to end ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [LinearSeg(), Clustering()], ids=lambda p: p.name)
def test_protocol_scores_every_test_image(protocol):
    assert [m.name for m in protocol.metrics(Squares())] == ["dice", "iou"]
    overrides = {"epochs": 2} if isinstance(protocol, LinearSeg) else {}
    outcome = protocol.run(context(protocol, vgg(), **overrides))
    assert set(outcome.scores) == {"dice", "iou"}
    for scores in outcome.scores.values():
        assert scores.ids == DATA.test.ids
        assert len(scores.per_image) == len(DATA.test)
        assert all(0 <= s <= 1 for s in scores.per_image)
    # IoU = D / (2 - D) image by image.
    for dice, iou in zip(outcome.scores["dice"].per_image, outcome.scores["iou"].per_image, strict=True):
        assert iou == pytest.approx(dice / (2 - dice))
    assert outcome.seconds > 0


@pytest.mark.parametrize("protocol", [LinearSeg(), Clustering()], ids=lambda p: p.name)
def test_protocol_is_deterministic_given_the_seed(protocol):
    overrides = {"epochs": 2} if isinstance(protocol, LinearSeg) else {}

    def dice(seed: int) -> tuple[float, ...]:
        return protocol.run(context(protocol, vgg(), seed=seed, **overrides)).scores["dice"].per_image

    assert dice(0) == dice(0)
    assert dice(0) != dice(1)


def test_clustering_selection_is_one_minus_validation_dice():
    outcome = Clustering().run(context(Clustering(), Identity()))
    assert outcome.selection.epoch is None
    assert outcome.selection.val_loss_name == "1 - validation dice"
    assert 0 <= outcome.selection.val_loss < 0.05


def test_clustering_finds_the_foreground_of_informative_features_only():
    assert mean_dice(Clustering().run(context(Clustering(), Identity()))) > 0.95
    assert mean_dice(Clustering().run(context(Clustering(), NoiseEncoder(channels=3, seed=7)))) < 0.6


def test_clustering_settings_reject_a_single_cluster():
    settings = Clustering().settings(BUILT_IN["demo"], Squares())
    with pytest.raises(ConfigError, match="clusters"):
        dataclasses.replace(settings, clusters=1)
