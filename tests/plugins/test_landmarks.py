"""One-shot landmark localisation: the landmarks tasks carry (phantoms, lung masks) and the ``landmarks`` protocols."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data
from fakes import NoiseEncoder, seeded_context
from ssl_bench_protocols.landmarks import (
    Landmarks,
    LandmarkSettings,
    LandmarksNearest,
    centre_weighted,
    locate,
    radial_scores,
    sample_descriptors,
)
from ssl_bench_tasks._landmarks import DISC_LANDMARKS, LUNG_LANDMARKS, disc_landmarks, lung_landmarks
from typer.testing import CliRunner

from ssl_bench.api import ConfigError, DataError, Encoder, SegmentationData, SegmentationSplit, Task
from ssl_bench.api.data import FUNDUS_LANDMARKS, make_fundus
from ssl_bench.api.nets import FeatureInfo
from ssl_bench.budget import BUILT_IN
from ssl_bench.cli import app

NAN = float("nan")
# Half a pixel's diagonal: the furthest a point can lie from the nearest pixel centre.
HALF_PIXEL_DIAGONAL = math.sqrt(0.5)


# ----------------------------------------------------------------------------------------------------
# Metrics


def test_radial_scores_match_hand_computed_values():
    truth = torch.tensor([[[0.0, 0], [10, 10]], [[5, 5], [NAN, NAN]], [[NAN, NAN], [NAN, NAN]]])
    predicted = torch.tensor(
        [
            [[[3.0, 4], [10, 10]], [[5, 5], [50, 50]], [[1, 1], [2, 2]]],  # template 1: errors 5, 0 | 0, - | -, -
            [[[0.0, 0], [10, 16]], [[5, 13], [0, 0]], [[1, 1], [2, 2]]],  # template 2: errors 0, 6 | 8, - | -, -
        ]
    )
    scores = radial_scores(predicted, truth, diagonal=100.0)
    # Image 1: errors 5, 0, 0, 6; image 2: 0, 8 (its second landmark is absent); image 3 has none.
    expected = {
        "radial_error_px": [2.75, 4.0],
        "radial_error_diag": [0.0275, 0.04],
        "success_2pct": [0.5, 0.5],
        "success_4pct": [0.5, 0.5],
        "success_8pct": [1.0, 1.0],  # within 8 px includes 8 px
    }
    assert set(scores) == set(expected)
    for name, values in expected.items():
        assert scores[name][:2].tolist() == pytest.approx(values), name
        assert math.isnan(scores[name][2]), name


def test_metrics_say_radial_error_is_lower_better_and_success_higher():
    metrics = Landmarks().metrics(task=None)
    directions = {metric.name: metric.higher_is_better for metric in metrics}
    assert metrics[0].name == "radial_error_px"
    assert directions == {
        "radial_error_px": False,
        "radial_error_diag": False,
        "success_2pct": True,
        "success_4pct": True,
        "success_8pct": True,
    }


# ----------------------------------------------------------------------------------------------------
# Landmarks as task data


HAND_DRAWN_LUNGS = [
    ".......#........",  # a one-pixel speck: not a lung
    "..#.........##..",
    ".###.......####.",
    ".###.......####.",
    "####.......#####",
    "####......#####.",
    "................",
]


def test_lung_landmarks_from_a_hand_drawn_mask():
    mask = np.array([[char == "#" for char in row] for row in HAND_DRAWN_LUNGS])
    points = lung_landmarks(mask[None])
    assert points.dtype == torch.float32 and points.shape == (1, len(LUNG_LANDMARKS), 2)
    expected = {
        "right lung apex": (1, 2),  # the image's left lung: its top row has one pixel
        "right costophrenic angle": (5, 0),  # the largest row - col
        "left lung apex": (1, 12.5),  # the middle of the two pixels of its top row
        "left costophrenic angle": (4.5, 14.5),  # row + col = 19 at (5, 14) and (4, 15): their mean
    }
    for name, point in expected.items():
        assert points[0, LUNG_LANDMARKS.index(name)].tolist() == list(point), name


def test_a_mask_with_one_lung_has_no_lung_landmarks():
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 2:6, 1:4] = True
    assert lung_landmarks(mask).isnan().all()


HAND_DRAWN_DISC = [
    "..........",
    "...###....",
    "..#####...",
    "..#####...",
    "...###....",
    "........#.",
]


def test_disc_centre_from_a_hand_drawn_mask_ignores_a_stray_pixel():
    mask = np.array([[char == "#" for char in row] for row in HAND_DRAWN_DISC])
    points = disc_landmarks(np.stack([mask, np.zeros_like(mask)]))
    assert points.dtype == torch.float32 and points.shape == (2, len(DISC_LANDMARKS), 2)
    # The disc's 16 pixels: rows 1 and 4 hold 3 each, rows 2 and 3 hold 5; columns symmetric about 4.
    assert points[0, 0].tolist() == [2.5, 4.0]
    assert points[1].isnan().all()  # an empty mask has no disc


def test_fundus_phantom_landmarks_are_where_the_generator_drew_them():
    phantoms = make_fundus(12, 128, seed=3)
    points = np.stack([phantoms.landmarks[name] for name in FUNDUS_LANDMARKS], axis=1)  # (N, L, 2)
    rows, cols = np.rint(points[..., 0]), np.rint(points[..., 1])
    present = ~np.isnan(rows)
    assert present[:, :2].all() and present.mean() > 0.9
    index = np.arange(12)
    assert phantoms.masks["disc"][index, rows[:, 0].astype(int), cols[:, 0].astype(int)].all()
    disc_rows = points[:, 0, 0]
    for k, name in enumerate(FUNDUS_LANDMARKS[2:], start=2):
        seen = present[:, k]
        r, c = rows[seen, k].astype(int), cols[seen, k].astype(int)
        # A branching lies on a vessel (within a pixel: the point is a vessel's centre line, the mask its disc stamps).
        near_vessel = [
            phantoms.masks["vessel"][i, max(a - 1, 0) : a + 2, max(b - 1, 0) : b + 2].any()
            for i, a, b in zip(index[seen], r, c, strict=True)
        ]
        assert all(near_vessel), name
        above = points[seen, k, 0] < disc_rows[seen]
        assert above.all() if name.startswith("superior") else not above.any(), name


def test_fundus_landmarks_are_the_same_anatomy_at_every_size_and_in_chunks():
    small, large = make_fundus(4, 64, seed=5), make_fundus(4, 128, seed=5)
    chunk = make_fundus(2, 128, seed=5, start=2)
    for name in FUNDUS_LANDMARKS:
        # Pixel centres at integers: (p + 0.5) scales with the size.
        np.testing.assert_allclose((small.landmarks[name] + 0.5) * 2 - 0.5, large.landmarks[name], atol=1e-4)
        np.testing.assert_array_equal(chunk.landmarks[name], large.landmarks[name][2:])


def test_synthetic_tasks_carry_their_declared_landmarks():
    from ssl_bench.plugins import get_registry

    for name in ("synthetic-vessel", "synthetic-lung"):
        task = get_registry().task(name)
        data = task.load(None)
        for split in (data.train, data.test):
            assert split.landmarks.shape == (len(split), len(task.landmarks), 2)
            assert Landmarks().serves(task) and LandmarksNearest().serves(task)


def test_real_chest_x_rays_get_lung_landmarks_on_the_right_sides():
    from ssl_bench.plugins import get_registry

    root = shared_data("CXR_lungs_512").parent
    task = get_registry().task("cxr-lungs-folder")
    data = task.load(root)
    points = torch.cat([data.train.landmarks, data.test.landmarks])
    assert task.landmarks == LUNG_LANDMARKS and points.shape == (60, 4, 2) and not points.isnan().any()
    right_apex, right_angle, left_apex, left_angle = points.unbind(dim=1)
    assert (right_apex[:, 0] < right_angle[:, 0]).all() and (left_apex[:, 0] < left_angle[:, 0]).all()
    assert (right_angle[:, 1] < left_angle[:, 1]).all() and (right_apex[:, 1] < left_apex[:, 1]).all()


# ----------------------------------------------------------------------------------------------------
# Matching


def coordinate_features(size: int, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Unit features ``(1, 4, size, size)`` that are each pixel's coordinates in a frame shifted by ``shift``:
    ``(cos, sin)`` of row and column angles over half a turn, so that cosine similarity peaks at one pixel only."""
    angles = [(torch.arange(size, dtype=torch.float32) - offset) * (math.pi / (2 * size)) for offset in shift]
    rows = torch.stack([angles[0].cos(), angles[0].sin()])[:, :, None].expand(2, size, size)
    cols = torch.stack([angles[1].cos(), angles[1].sin()])[:, None, :].expand(2, size, size)
    return (torch.cat([rows, cols]) / math.sqrt(2))[None]


@pytest.mark.parametrize("sigma", [0.0, 3.0])
def test_coordinate_features_localise_a_shifted_phantom_perfectly_and_random_features_do_not(sigma):
    size = 128
    template = torch.from_numpy(np.stack([make_fundus(1, size, seed=0).landmarks[n][0] for n in FUNDUS_LANDMARKS]))
    shifts = [(6, -9), (-4, 7), (0, 0)]
    generator = torch.Generator().manual_seed(0)
    for features in ("coordinates", "random"):
        errors = []
        for shift in shifts:
            if features == "coordinates":
                maps = [coordinate_features(size), coordinate_features(size, shift)]
            else:
                maps = [torch.randn(1, 16, size, size, generator=generator) for _ in range(2)]
            queries = sample_descriptors(centre_weighted(maps[0], sigma), template[None])[0]
            found = locate(centre_weighted(maps[1], sigma), queries)[0]
            errors.append((found - (template + torch.tensor(shift))).norm(dim=1))
        errors = torch.cat(errors)
        if features == "coordinates":
            assert errors.max() <= HALF_PIXEL_DIAGONAL + 1e-4
        else:
            assert errors.mean() > 10


def test_centre_weighted_descriptor_is_the_gaussian_mean_of_the_pixels_inside():
    features = torch.randn(1, 3, 7, 9, generator=torch.Generator().manual_seed(1))
    sigma = 1.0
    result = centre_weighted(features, sigma)
    # Direct formula at two pixels, one at a corner: weights exp(-d^2 / 2 sigma^2) over pixels within 3 sigma per axis.
    for row, col in ((3, 4), (0, 0)):
        total, weight = torch.zeros(3), 0.0
        for r in range(7):
            for c in range(9):
                if abs(r - row) <= 3 and abs(c - col) <= 3:
                    w = math.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))
                    total += w * features[0, :, r, c]
                    weight += w
        expected = total / weight
        torch.testing.assert_close(result[0, :, row, col], expected / expected.norm(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# The protocol on an encoder


class CoordinateEncoder(Encoder):
    """Features that are each pixel's coordinates (see :func:`coordinate_features`), whatever the image shows."""

    in_chans = 3

    def __init__(self) -> None:
        super().__init__()
        self.feature_info = [FeatureInfo(4, 1)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [coordinate_features(x.shape[-1]).expand(len(x), -1, -1, -1)]


class Fundus(Task):
    name = "fundus-landmarks"
    description = "fundus phantoms with their landmarks"
    modality = "synthetic-fundus"
    channels = 3
    target = "vessels"
    landmarks = FUNDUS_LANDMARKS

    def load(self, data_root: Path | None) -> SegmentationData:
        raise NotImplementedError


def same_phantom_data(copies: tuple[int, int]) -> SegmentationData:
    """Train and test splits of ``copies`` of one fundus phantom: every template shows each test image's anatomy."""
    phantom = make_fundus(1, 128, seed=0)
    points = torch.from_numpy(np.stack([phantom.landmarks[name] for name in FUNDUS_LANDMARKS], axis=1))

    def split(n: int, prefix: str) -> SegmentationSplit:
        images = torch.from_numpy(phantom.images).expand(n, -1, -1, -1).contiguous()
        masks = torch.from_numpy(phantom.masks["vessel"]).expand(n, -1, -1).contiguous()
        return SegmentationSplit(images, masks, tuple(f"{prefix}{i}" for i in range(n)), points.expand(n, -1, -1))

    return SegmentationData(split(copies[0], "train"), split(copies[1], "test"))


def run_protocol(protocol, encoder: Encoder, data: SegmentationData, size: int = 96):
    settings = LandmarkSettings(image_size=size, templates=2, sigma=protocol.settings(BUILT_IN["demo"], Fundus()).sigma)
    return protocol.run(seeded_context(encoder, data, Fundus(), settings))


@pytest.mark.parametrize("protocol", [Landmarks(), LandmarksNearest()], ids=lambda p: p.name)
def test_protocol_with_coordinate_features_localises_to_the_pixel_and_random_features_do_not(protocol):
    data = same_phantom_data((3, 2))
    outcome = run_protocol(protocol, CoordinateEncoder(), data)
    # The working grid is 96 px for 128 px images: half a working pixel each way is 2/3 of a task pixel.
    errors = outcome.scores["radial_error_px"].per_image
    assert outcome.scores["radial_error_px"].ids == ("test0", "test1")
    assert max(errors) <= HALF_PIXEL_DIAGONAL * 128 / 96 + 1e-4
    assert outcome.scores["success_2pct"].per_image == (1.0, 1.0)
    random = run_protocol(protocol, NoiseEncoder(), data).scores
    assert min(random["radial_error_px"].per_image) > 10 and max(random["success_2pct"].per_image) < 0.5


def test_protocol_is_deterministic_and_the_centre_weighting_changes_it():
    from ssl_bench.api.nets import create_encoder

    torch.manual_seed(0)
    encoder = create_encoder("vgg16_bn_tiny", in_chans=3).eval()
    phantoms = make_fundus(5, 64, seed=1)
    points = torch.from_numpy(np.stack([phantoms.landmarks[name] for name in FUNDUS_LANDMARKS], axis=1))
    images, masks = torch.from_numpy(phantoms.images), torch.from_numpy(phantoms.masks["vessel"])
    ids = tuple(f"image{i}" for i in range(5))
    data = SegmentationData(
        SegmentationSplit(images[:3], masks[:3], ids[:3], points[:3]),
        SegmentationSplit(images[3:], masks[3:], ids[3:], points[3:]),
    )
    first, again = (run_protocol(Landmarks(), encoder, data, size=48).scores for _ in range(2))
    nearest = run_protocol(LandmarksNearest(), encoder, data, size=48).scores
    assert first == again
    assert first["radial_error_px"].per_image != nearest["radial_error_px"].per_image


def test_a_task_without_landmarks_is_not_served_and_missing_points_are_refused():
    class Plain(Fundus):
        landmarks = ()

    assert not Landmarks().serves(Plain()) and not LandmarksNearest().serves(Plain())
    data = same_phantom_data((2, 1))
    without_points = SegmentationData(
        SegmentationSplit(data.train.images, data.train.masks, data.train.ids),
        SegmentationSplit(data.test.images, data.test.masks, data.test.ids),
    )
    with pytest.raises(DataError, match="declares 6 landmarks but its train split carries no points"):
        run_protocol(Landmarks(), CoordinateEncoder(), without_points)
    no_template = SegmentationData(
        SegmentationSplit(data.train.images, data.train.masks, data.train.ids, data.train.landmarks * NAN),
        data.test,
    )
    with pytest.raises(DataError, match="no training image of task fundus-landmarks has all of its 6 landmarks"):
        run_protocol(Landmarks(), CoordinateEncoder(), no_template)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="templates must be a whole number >= 1"):
        LandmarkSettings(image_size=96, templates=0, sigma=1.0)
    with pytest.raises(ConfigError, match="sigma must be a number >= 0"):
        LandmarkSettings(image_size=96, templates=1, sigma=-1.0)


def test_run_through_the_cli_puts_the_metrics_in_the_leaderboard_lower_radial_error_better(tmp_path):
    result = CliRunner().invoke(
        app,
        ["run", "-m", "scratch", "-t", "synthetic-lung", "-p", "landmarks", "--results", str(tmp_path)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    with open(tmp_path / "leaderboard.csv") as stream:
        rows = {row["metric"]: row for row in csv.DictReader(stream) if row["protocol"] == "landmarks"}
    assert set(rows) == {"radial_error_px", "radial_error_diag", "success_2pct", "success_4pct", "success_8pct"}
    assert rows["radial_error_px"]["headline"] == "True" and rows["radial_error_px"]["higher_is_better"] == "False"
    assert rows["success_4pct"]["higher_is_better"] == "True"
    assert rows["radial_error_px"]["task"] == "synthetic-lung" and int(rows["radial_error_px"]["n_images"]) == 8
    assert 0 <= float(rows["success_8pct"]["mean"]) <= 1 and float(rows["radial_error_px"]["mean"]) > 0
    assert "radial_error_px (lower is better)" in (tmp_path / "leaderboard.md").read_text()
