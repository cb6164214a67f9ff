"""The dense and medical baselines (DenseCL, VICRegL, DetCon-S, Models Genesis) and their shared view geometry."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.models.modules.memory_bank import MemoryBankModule
from scipy import ndimage
from ssl_bench_methods import models_genesis as mg
from ssl_bench_methods._dense import ViewGeometry, dense_view, sample_geometry
from ssl_bench_methods.densecl import DenseCL
from ssl_bench_methods.detcon import (
    MASK_SIZE,
    MASK_SUPERSAMPLING,
    SEGMENTS,
    DetCon,
    oversegment,
    sample_segments,
    segment_areas,
)
from ssl_bench_methods.models_genesis import ModelsGenesis
from ssl_bench_methods.vicregl import VICRegL
from typer.testing import CliRunner

from ssl_bench.api import Stage
from ssl_bench.api.data import make_cxr, make_fundus
from ssl_bench.api.nets import create_encoder
from ssl_bench.cli import app
from ssl_bench.models import SegmentationModel
from ssl_bench.pools import PreparedPool, prepare_extras

METHODS = {cls.name: cls for cls in (DenseCL, VICRegL, DetCon, ModelsGenesis)}
SIZE = 32
BATCH = 4


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(channels: int, n: int = BATCH, size: int = 2 * SIZE, seed: int = 0) -> np.ndarray:
    return (make_fundus if channels == 3 else make_cxr)(n, size, seed=seed).images


def source_images(channels: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(uint8_images(channels, seed=seed)).float() / 255


def build(name: str, channels: int, seed: int = 0, encoder: str = "vgg16_bn_tiny", size: int = SIZE):
    method = METHODS[name]()
    stage = dataclasses.replace(method.stages("demo")[0], batch_size=BATCH, image_size=size)
    torch.manual_seed(seed)
    model = method.build_model(create_encoder(encoder, in_chans=channels), stage, channels)
    return method, stage, model


def train(method, stage: Stage, model, images: torch.Tensor, steps: int, seed: int = 0) -> list[float]:
    """``steps`` optimiser steps as the core takes them; the losses."""
    optimizer, _ = method.configure_optimizer(model, stage)
    draws, losses = generator(seed), []
    for step in range(steps):
        loss = method.training_step(model, images, stage, draws)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(model, stage, step, steps)
        losses.append(loss.item())
    return losses


# --- every method ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", METHODS)
def test_a_step_gives_a_finite_scalar_loss_whose_gradient_reaches_the_encoder(name, channels):
    method, stage, model = build(name, channels)
    loss = method.training_step(model, source_images(channels), stage, generator())
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("name", METHODS)
def test_a_step_runs_on_a_timm_encoder(name):
    method, stage, model = build(name, 3, encoder="resnet18", size=64)
    loss = method.training_step(model, source_images(3), stage, generator())
    loss.backward()
    assert torch.isfinite(loss) and next(model.encoder.parameters()).grad.abs().sum() > 0


def with_queues_of(model, reference):
    """A copy of ``model`` whose memory queues hold ``reference``'s: a loss compares like with like."""
    probe = copy.deepcopy(model)
    for mine, theirs in zip(probe.modules(), reference.modules(), strict=True):
        if isinstance(mine, MemoryBankModule):
            mine.bank.copy_(theirs.bank)
    return probe


@pytest.mark.parametrize("name", METHODS)
def test_training_on_a_fixed_batch_lowers_the_loss_of_fixed_steps(name):
    # At the demo's 64 px: at 32 px the deepest map has 2 x 2 cells, too few for DetCon's segments to differ;
    # and 8 images, so that DetCon has negatives enough from other images.
    method, stage, model = build(name, 3, size=64)
    stage = dataclasses.replace(stage, batch_size=8)
    images = torch.from_numpy(uint8_images(3, n=8, size=128)).float() / 255
    before = copy.deepcopy(model)
    train(method, stage, model, images, steps=20)

    def probe_loss(candidate) -> float:
        """The mean loss of three fixed steps (same views and sampled segments), with the initial queues."""
        probe = with_queues_of(candidate, before)
        with torch.no_grad():
            return np.mean([method.training_step(probe, images, stage, generator(99 + k)).item() for k in range(3)])

    assert probe_loss(model) < 0.95 * probe_loss(before)


@pytest.mark.parametrize("name", METHODS)
def test_exported_weights_load_strictly_into_the_transfer_model_and_were_trained(name):
    method, stage, model = build(name, 1)
    fresh = copy.deepcopy(model.encoder.state_dict())
    train(method, stage, model, source_images(1), steps=2)
    exported = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    transfer = SegmentationModel(create_encoder("vgg16_bn_tiny", in_chans=1))
    transfer.encoder.load_state_dict(exported, strict=True)
    loaded = transfer.encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in exported.items())
    assert any(not torch.equal(fresh[k], v) for k, v in exported.items() if v.is_floating_point())


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_gives_the_same_losses_and_another_seed_others(name):
    def losses(seed: int) -> list[float]:
        method, stage, model = build(name, 3, seed=seed)
        return train(method, stage, model, source_images(3), steps=2, seed=seed)

    assert losses(0) == losses(0)
    assert all(a != b for a, b in zip(losses(0), losses(1), strict=True))


@pytest.mark.parametrize("name", METHODS)
def test_ssl_bench_check_passes(name):
    result = CliRunner().invoke(app, ["check", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output


# --- views with known geometry ----------------------------------------------------------------


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """(1, 2, H, W): each pixel holds its centre's (x, y) in source pixels."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([x, y]).unsqueeze(0).double()


def expected_source_position(geometry: ViewGeometry, view: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(size,) x and (size,) y in source pixels of the centres of a view's columns and rows, from its box."""
    fraction = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    u = 1 - fraction if geometry.flip_x[view] else fraction
    v = 1 - fraction if geometry.flip_y[view] else fraction
    return geometry.left[view] + u * geometry.width[view], geometry.top[view] + v * geometry.height[view]


def test_crop_boxes_fit_the_image_with_the_drawn_area_and_flip_about_half_the_views():
    geometry = sample_geometry(2000, (60, 80), generator(), scale=(0.2, 1.0))
    assert (geometry.top >= 0).all() and (geometry.top + geometry.height <= 60 + 1e-9).all()
    assert (geometry.left >= 0).all() and (geometry.left + geometry.width <= 80 + 1e-9).all()
    area = geometry.height * geometry.width / (60 * 80)
    assert area.min() >= 0.1 and area.max() <= 1 and 0.45 < area.mean() < 0.6
    assert 0.45 < geometry.flip_x.double().mean() < 0.55 and 0.45 < geometry.flip_y.double().mean() < 0.55


def test_each_view_pixel_comes_from_the_source_pixel_its_box_and_flips_say():
    source = coordinate_image(64, 48).expand(6, -1, -1, -1)
    geometry = sample_geometry(6, (64, 48), generator(3), scale=(0.2, 1.0))
    views = geometry.warp(source, 20, 20)
    grid = geometry.source_grid(20, 20, like=source)
    for view in range(6):
        x, y = expected_source_position(geometry, view, 20)
        # Bilinear sampling reproduces a linear image exactly, except within half a pixel of its edge.
        inside = ((x > 0.5) & (x < 47.5))[None, :] & ((y > 0.5) & (y < 63.5))[:, None]
        torch.testing.assert_close(views[view, 0][inside], x.expand(20, 20)[inside])
        torch.testing.assert_close(views[view, 1][inside], y[:, None].expand(20, 20)[inside])
        torch.testing.assert_close(grid[view, ..., 0], (2 * x / 48 - 1).expand(20, 20))
        torch.testing.assert_close(grid[view, ..., 1], (2 * y / 64 - 1)[:, None].expand(20, 20))


def test_matched_locations_of_two_views_come_from_the_same_source_pixel():
    size = 24
    source = coordinate_image(64, 64).expand(8, -1, -1, -1)
    first, second = (sample_geometry(8, (64, 64), generator(seed), scale=(0.3, 1.0)) for seed in (1, 2))
    first_views, second_views = first.warp(source, size, size), second.warp(source, size, size)
    first_grid = first.source_grid(size, size, like=source).flatten(1, 2)
    second_grid = second.source_grid(size, size, like=source).flatten(1, 2)
    matched_pairs = 0
    for view in range(8):
        # VICRegL's rule: each location of view 1 is matched to the nearest location of view 2 in the source.
        nearest = torch.cdist(first_grid[view], second_grid[view]).argmin(dim=1)
        pixels_1 = first_views[view].flatten(1).T
        pixels_2 = second_views[view].flatten(1).T[nearest]
        # Where view 1 shows what view 2 shows too (its box, from the box's corners), away from the edges.
        corner = torch.stack([second.left[view], second.top[view]])
        inside = (pixels_1 >= corner) & (pixels_1 <= corner + torch.stack([second.width[view], second.height[view]]))
        interior = ((pixels_1 > 0.5) & (pixels_1 < 63.5) & (pixels_2 > 0.5) & (pixels_2 < 63.5)).all(dim=1)
        keep = inside.all(dim=1) & interior
        # A nearest match is at most half of view 2's pixel pitch away, on each axis, in source pixels.
        half_pitch = torch.stack([second.width[view], second.height[view]]) / (2 * size)
        assert ((pixels_1[keep] - pixels_2[keep]).abs() <= half_pitch + 1e-6).all()
        matched_pairs += int(keep.sum())
    assert matched_pairs > 500


def test_a_dense_view_is_normalised_and_its_randomness_comes_from_the_generator():
    images = source_images(1)
    first, geometry = dense_view(images, SIZE, generator(5))
    again, same_geometry = dense_view(images, SIZE, generator(5))
    other, _ = dense_view(images, SIZE, generator(6))
    assert first.shape == (BATCH, 1, SIZE, SIZE) and first.min() >= -1 - 1e-6 and first.max() <= 1 + 1e-6
    assert torch.equal(first, again) and torch.equal(geometry.theta(), same_geometry.theta())
    assert not torch.equal(first, other)


# --- DenseCL ---------------------------------------------------------------------------------


def test_densecl_momentum_branch_follows_the_exponential_moving_average():
    method, stage, model = build("densecl", 3)
    train(method, stage, model, source_images(3), steps=1)
    query, key = model.query.dense_projection.layers[0].weight, model.key.dense_projection.layers[0].weight
    key_before, query_now = key.detach().clone(), query.detach().clone()
    method.after_step(model, stage, 1, 2)
    m = method.options.momentum
    torch.testing.assert_close(key.detach(), m * key_before + (1 - m) * query_now)
    assert not key.requires_grad and model.encoder is model.query.encoder


def test_densecl_queues_are_checkpointed_so_a_resumed_model_sees_the_same_negatives():
    method, stage, model = build("densecl", 3)
    images = source_images(3)
    train(method, stage, model, images, steps=2)
    assert {"global_loss.memory_bank.bank", "dense_loss.queue.bank"} <= set(model.state_dict())
    _, _, resumed = build("densecl", 3, seed=7)
    resumed.load_state_dict(model.state_dict())
    losses = [train(method, stage, candidate, images, steps=1, seed=3) for candidate in (model, resumed)]
    assert losses[0] == losses[1]


def test_dense_term_is_infonce_of_matched_cells_against_the_queue_then_enqueues_the_mean_key():
    method, _, model = build("densecl", 3)
    loss = model.dense_loss
    queries, matched, keys = (torch.randn(2, 3, 128, generator=generator(seed)) for seed in (1, 2, 3))
    queue = loss.queue.bank.clone()  # (queue size, D): random unit rows before any key is enqueued
    q, k = F.normalize(queries, dim=2), F.normalize(matched, dim=2)
    tau = method.options.temperature
    positive = torch.exp((q * k).sum(dim=2) / tau)
    negatives = torch.exp(q @ queue.T / tau).sum(dim=2)
    expected = -torch.log(positive / (positive + negatives)).mean()
    torch.testing.assert_close(loss(queries.requires_grad_(), matched, keys), expected)
    torch.testing.assert_close(loss.queue.bank[:2], F.normalize(keys.mean(dim=1), dim=1))
    torch.testing.assert_close(loss.queue.bank[2:], queue[2:])


# --- DetCon ----------------------------------------------------------------------------------


def test_oversegmentation_is_deterministic_bounded_and_independent_of_batch_mates():
    images = uint8_images(3, n=6)
    labels = oversegment(images)
    assert labels.dtype == np.uint8 and labels.shape == (6, MASK_SIZE, MASK_SIZE) and labels.max() < SEGMENTS
    assert np.array_equal(labels, oversegment(images))
    assert np.array_equal(labels[4:5], oversegment(images[4:5]))
    assert all(len(np.unique(image)) > SEGMENTS // 2 for image in labels)


@pytest.mark.parametrize("channels", [1, 3])
def test_segments_are_spatially_coherent(channels):
    labels = oversegment(uint8_images(channels, n=8, size=128))
    same_as_neighbour = np.mean(
        [(labels[:, 1:] == labels[:, :-1]).mean(), (labels[..., 1:] == labels[..., :-1]).mean()]
    )
    assert same_as_neighbour > 0.85
    for image in labels:
        for segment in np.unique(image):
            components, _ = ndimage.label(image == segment)
            sizes = np.bincount(components.ravel())[1:]
            assert sizes.max() >= 0.5 * sizes.sum()


def test_segments_do_not_straddle_a_colour_edge():
    images = np.zeros((1, 3, 96, 96), np.uint8)
    images[0, 0, :, :40] = 200  # red on the left, blue on the right: the edge is off the seed grid
    images[0, 2, :, 40:] = 200
    labels = oversegment(images)[0]
    edge = 40 * MASK_SIZE // 96
    assert not set(np.unique(labels[:, :edge])) & set(np.unique(labels[:, edge + 1 :]))


def test_segment_areas_follow_the_views_crops_and_flips():
    # A 4 x 4 chequer of segments, so that each source pixel's label is known from its position.
    block = MASK_SIZE // 4
    rows, cols = np.indices((MASK_SIZE, MASK_SIZE)) // block
    segments = torch.from_numpy((4 * rows + cols).astype(np.uint8)).expand(5, -1, -1)
    geometry = sample_geometry(5, (MASK_SIZE, MASK_SIZE), generator(4), scale=(0.2, 1.0))
    areas = segment_areas(segments, geometry, 3, 3)
    fine = 3 * MASK_SUPERSAMPLING
    for view in range(5):
        x, y = expected_source_position(geometry, view, fine)
        label = 4 * (y // block).long()[:, None] + (x // block).long()[None, :]
        expected = F.one_hot(label, SEGMENTS).permute(2, 0, 1).double()
        expected = expected.view(SEGMENTS, 3, MASK_SUPERSAMPLING, 3, MASK_SUPERSAMPLING).mean(dim=(2, 4))
        # Nearest sampling may flip a label where a sample point lies on a block edge: allow one point per cell.
        assert (areas[view].double() - expected).abs().max() <= 1 / MASK_SUPERSAMPLING**2 + 1e-6
        assert torch.allclose(areas[view].sum(dim=0), torch.ones(3, 3))


def test_segments_are_sampled_only_among_those_both_views_show():
    shared = torch.zeros(3, SEGMENTS, dtype=torch.bool)
    shared[0, [2, 5]] = True
    shared[1, 7] = True
    sampled = sample_segments(shared, 64, generator())
    assert set(sampled[0].tolist()) == {2, 5} and set(sampled[1].tolist()) == {7}
    assert len(set(sampled[2].tolist())) > SEGMENTS // 2  # no shared segment: any


def test_detcon_masks_are_computed_once_per_pool_and_cached(tmp_path, monkeypatch):
    images = uint8_images(3, n=6)
    images.setflags(write=False)  # as the pool's memory map
    pool = PreparedPool("test", "f" * 64, images, np.arange(6), np.arange(0))
    method, calls = DetCon(), []
    segment = method.pool_extras
    monkeypatch.setattr(method, "pool_extras", lambda pool_images: calls.append(1) or segment(pool_images))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = prepare_extras(pool, method, tmp_path)
    second = prepare_extras(pool, method, tmp_path)
    assert len(calls) == 1
    assert np.array_equal(first, oversegment(images)) and np.array_equal(second, first)


def test_detcon_with_cached_masks_matches_segmenting_the_batch_itself():
    method, stage, model = build("detcon", 3)
    images = uint8_images(3)
    pixels = torch.from_numpy(images).float() / 255
    cached = torch.from_numpy(method.pool_extras(images))
    with torch.no_grad():
        with_cache = method.training_step(copy.deepcopy(model), pixels, stage, generator(), extras=cached)
        without = method.training_step(copy.deepcopy(model), pixels, stage, generator())
    assert with_cache.item() == without.item()


# --- Models Genesis --------------------------------------------------------------------------


def cubic_bezier(t: np.ndarray, first: float, second: float) -> np.ndarray:
    """B(t) = (1-t)^3 * 0 + 3 (1-t)^2 t * first + 3 (1-t) t^2 * second + t^3 * 1."""
    return 3 * (1 - t) ** 2 * t * first + 3 * (1 - t) * t**2 * second + t**3


@pytest.mark.parametrize("inverted", [False, True])
def test_nonlinear_intensity_follows_the_bezier_curve(inverted):
    (x1, y1), (x2, y2) = (0.3, 0.8), (0.6, 0.1)  # x(t) and y(t) both increase: the curve is a function
    t = np.linspace(0.01, 0.99, 49)
    images = torch.from_numpy(cubic_bezier(t, x1, x2)).float().view(1, 1, 7, 7)
    controls = torch.tensor([[[x1, y1], [x2, y2]]], dtype=torch.float64)
    mapped = mg.nonlinear_intensity(images, controls, torch.tensor([inverted]))
    expected = cubic_bezier(1 - t if inverted else t, y1, y2)
    np.testing.assert_allclose(mapped.flatten().numpy(), expected, atol=2e-4)


def test_local_pixel_shuffling_permutes_pixels_within_the_chosen_cells_only():
    images = torch.rand(2, 3, 21, 21, generator=generator(1))
    chosen = torch.rand(2, 5, 5, generator=generator(2)) < 0.5
    shuffled = mg.shuffle_pixels(images, 4, chosen, generator(3))
    assert torch.equal(shuffled[..., 20:, :], images[..., 20:, :]) and torch.equal(shuffled[..., 20], images[..., 20])
    for b, row, col in np.ndindex(2, 5, 5):
        cell = (b, slice(None), slice(4 * row, 4 * row + 4), slice(4 * col, 4 * col + 4))
        before, after = images[cell].flatten(1).T, shuffled[cell].flatten(1).T
        if chosen[b, row, col]:
            # The same pixels, colours kept together, in another order.
            assert sorted(map(tuple, after.tolist())) == sorted(map(tuple, before.tolist()))
            assert not torch.equal(after, before)
        else:
            assert torch.equal(after, before)


def box_mask(top: int, left: int, height: int, width: int, size: int = 32) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., top : top + height, left : left + width] = True
    return mask


def two_boxes() -> tuple[mg.Boxes, torch.Tensor]:
    """Boxes (5, 6, 10, 4) and (20, 12, 6, 15) present, a third absent; and their union drawn directly."""

    def column(*values: int) -> torch.Tensor:
        return torch.tensor([values])

    boxes = mg.Boxes(column(5, 20, 0), column(6, 12, 0), column(10, 6, 32), column(4, 15, 32), column(1, 1, 0).bool())
    return boxes, box_mask(5, 6, 10, 4) | box_mask(20, 12, 6, 15)


def test_in_painting_changes_exactly_the_holes():
    images = torch.rand(1, 3, 32, 32, generator=generator(1))
    holes, inside = two_boxes()
    painted = mg.in_paint(images, holes, generator(2))
    inside = inside.expand_as(images)
    assert torch.equal(painted[~inside], images[~inside]) and (painted[inside] != images[inside]).all()


def test_out_painting_keeps_exactly_the_windows():
    images = torch.rand(1, 3, 32, 32, generator=generator(1))
    windows, inside = two_boxes()
    painted = mg.out_paint(images, windows, generator(2))
    inside = inside.expand_as(images)
    assert torch.equal(painted[inside], images[inside]) and (painted[~inside] != images[~inside]).all()


@pytest.mark.parametrize(("fraction", "first"), [((1 / 6, 1 / 3), False), ((3 / 7, 4 / 7), True)])
def test_random_boxes_have_the_papers_sizes_and_stay_inside(fraction, first):
    boxes = mg.random_boxes(4000, (64, 96), fraction, generator(), first=first)
    present = boxes.present
    for start, side, length in ((boxes.top, boxes.height, 64), (boxes.left, boxes.width, 96)):
        assert (side[present] >= math.floor(fraction[0] * length)).all()
        assert (side[present] <= fraction[1] * length).all()
        assert (start >= mg.BOX_MARGIN).all() and (start + side <= length - mg.BOX_MARGIN).all()
    # Present boxes come first; the first is always there for windows, each further one with p = 0.95.
    assert torch.equal(present, present.cummin(dim=1).values)
    assert present[:, 0].all() if first else abs(present[:, 0].double().mean() - 0.95) < 0.015
    assert abs(present[:, 1].double().mean() - (0.95 if first else 0.95**2)) < 0.015


def test_distortions_keep_the_unit_range_and_spare_few_images():
    images = torch.rand(400, 1, 32, 32, generator=generator(1))
    distorted = mg.distort(images, generator(2))
    assert distorted.min() >= 0 and distorted.max() <= 1
    assert torch.equal(distorted, mg.distort(images, generator(2)))
    # An image escapes every distortion with p = 0.5 * 0.1 * 0.1.
    assert (distorted == images).flatten(1).all(dim=1).double().mean() < 0.03
