"""Synthetic fundus and chest X-ray phantoms: contract, determinism, and anatomy checked on the pixels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ssl_bench.data.phantoms import PhantomSet, make_angiogram, make_cxr, make_fundus
from ssl_bench.preview import _GREEN, _masked, _rgb, save_preview, save_task_preview
from ssl_bench.task import SegmentationData, SegmentationSplit

SIZE = 128
COUNT = 10
EIGHT_CONNECTED = np.ones((3, 3), bool)

Maker = Callable[..., PhantomSet]
FAMILIES = [(make_fundus, 3, {"vessel", "disc"}), (make_cxr, 1, {"lung", "heart"}), (make_angiogram, 1, {"vessel"})]


@pytest.fixture(scope="module")
def fundus() -> PhantomSet:
    return make_fundus(COUNT, SIZE, seed=7)


@pytest.fixture(scope="module")
def cxr() -> PhantomSet:
    return make_cxr(COUNT, SIZE, seed=7)


@pytest.fixture(scope="module")
def angiogram() -> PhantomSet:
    return make_angiogram(COUNT, SIZE, seed=7)


def field_of_view(images: np.ndarray) -> np.ndarray:
    """Pixels lit in any channel: the retina, however dark its vessels, is far above the black surround."""
    return images.max(axis=1) > 20


def radius_from_centre(size: int) -> np.ndarray:
    """Normalised distance of each pixel centre from the image centre (1 = half the side)."""
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    return np.hypot(centres[None, :], centres[:, None])


def centroid(mask: np.ndarray) -> np.ndarray:
    """(row, col) centre of mass as a fraction of the side."""
    return np.argwhere(mask).mean(axis=0) / mask.shape[-1]


# ----------------------------------------------------------------------------------------------------
# Contract and determinism


@pytest.mark.parametrize(("make", "channels", "names"), FAMILIES)
@pytest.mark.parametrize("size", [64, 96])
def test_shapes_and_dtypes(make: Maker, channels: int, names: set[str], size: int) -> None:
    phantoms = make(3, size, seed=0)
    assert phantoms.images.shape == (3, channels, size, size)
    assert phantoms.images.dtype == np.uint8
    assert set(phantoms.masks) == names
    for mask in phantoms.masks.values():
        assert mask.shape == (3, size, size)
        assert mask.dtype == np.bool_
        assert mask.any(axis=(1, 2)).all()
    assert len(phantoms) == 3


@pytest.mark.parametrize(("make", "channels", "names"), FAMILIES)
def test_empty_set_keeps_its_shape(make: Maker, channels: int, names: set[str]) -> None:
    phantoms = make(0, 64, seed=0)
    assert phantoms.images.shape == (0, channels, 64, 64)
    assert {name: m.shape for name, m in phantoms.masks.items()} == {name: (0, 64, 64) for name in names}


@pytest.mark.parametrize(("make", "channels", "names"), FAMILIES)
def test_same_seed_same_images_other_seed_other_images(make: Maker, channels: int, names: set[str]) -> None:
    first, again, other = make(3, 64, seed=1), make(3, 64, seed=1), make(3, 64, seed=2)
    np.testing.assert_array_equal(first.images, again.images)
    for name in names:
        np.testing.assert_array_equal(first.masks[name], again.masks[name])
        # Every image differs, not just one: the seed reaches each image's own stream.
        assert (first.masks[name] != other.masks[name]).any(axis=(1, 2)).all()
    assert (first.images != other.images).any(axis=(1, 2, 3)).all()


@pytest.mark.parametrize(("make", "channels", "names"), FAMILIES)
def test_images_differ_within_a_set(make: Maker, channels: int, names: set[str]) -> None:
    phantoms = make(4, 64, seed=3)
    for name in names:
        masks = phantoms.masks[name].reshape(4, -1)
        assert len({m.tobytes() for m in masks}) == 4


@pytest.mark.parametrize(("make", "channels", "names"), FAMILIES)
def test_start_gives_the_same_images_as_a_slice(make: Maker, channels: int, names: set[str]) -> None:
    whole, part = make(10, 64, seed=5), make(4, 64, seed=5, start=2)
    np.testing.assert_array_equal(part.images, whole.images[2:6])
    for name in names:
        np.testing.assert_array_equal(part.masks[name], whole.masks[name][2:6])


@pytest.mark.parametrize(("make", "name"), [(make_fundus, "disc"), (make_cxr, "heart")])
def test_the_same_picture_at_every_size(make: Maker, name: str) -> None:
    small, large = make(3, 64, seed=4), make(3, 256, seed=4)
    for a, b in zip(small.masks[name], large.masks[name], strict=True):
        np.testing.assert_allclose(centroid(a), centroid(b), atol=0.02)
        assert a.mean() == pytest.approx(b.mean(), rel=0.15)
    # Colours, contrast and illumination agree too: the large image averaged down 4x matches the small one.
    shrunk = large.images.reshape(3, -1, 64, 4, 64, 4).mean(axis=(3, 5))
    assert (np.abs(shrunk - small.images).mean(axis=(1, 2, 3)) < 7).all()


@pytest.mark.parametrize("make", [make_fundus, make_cxr, make_angiogram])
@pytest.mark.parametrize(("args", "message"), [((-1, 64, 0), "n"), ((1, 16, 0), "size"), ((1, 64, -3), "seed")])
def test_invalid_arguments_are_refused(make: Maker, args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(*args)


def test_negative_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        make_cxr(1, 64, 0, start=-1)


# ----------------------------------------------------------------------------------------------------
# Fundus anatomy


def test_vessels_cover_a_plausible_fraction_of_the_field_of_view(fundus: PhantomSet) -> None:
    fov = field_of_view(fundus.images)
    fraction = (fundus.masks["vessel"] & fov).sum(axis=(1, 2)) / fov.sum(axis=(1, 2))
    assert ((fraction > 0.05) & (fraction < 0.18)).all(), fraction
    assert 0.07 < fraction.mean() < 0.15


def test_disc_covers_one_to_three_percent(fundus: PhantomSet) -> None:
    fraction = fundus.masks["disc"].mean(axis=(1, 2))
    assert ((fraction > 0.01) & (fraction < 0.03)).all(), fraction


def test_disc_is_off_centre_on_either_side(fundus: PhantomSet) -> None:
    columns = np.array([centroid(disc)[1] for disc in fundus.masks["disc"]])
    assert (np.abs(columns - 0.5) > 0.12).all(), columns
    assert (columns < 0.5).any() and (columns > 0.5).any()  # left and right eyes both occur


def test_vessel_tree_is_one_component_through_the_disc(fundus: PhantomSet) -> None:
    for vessels, disc in zip(fundus.masks["vessel"], fundus.masks["disc"], strict=True):
        labels, _ = ndimage.label(vessels, EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel())[1:]
        largest = labels == sizes.argmax() + 1
        assert sizes.max() >= 0.85 * vessels.sum()
        assert (largest & disc).any()


def test_vessels_are_darker_than_the_retina_around_them(fundus: PhantomSet) -> None:
    fov = field_of_view(fundus.images)
    for image, vessels, disc, lit in zip(fundus.images, fundus.masks["vessel"], fundus.masks["disc"], fov, strict=True):
        green = image[1].astype(float)
        around = ndimage.binary_dilation(vessels, iterations=3) & ~vessels & ~disc & lit
        assert green[vessels & ~disc].mean() < 0.85 * green[around].mean()


def test_vessels_are_redder_than_the_retina(fundus: PhantomSet) -> None:
    red, green = fundus.images[:, 0].astype(float), fundus.images[:, 1].astype(float) + 1
    ratio = red / green
    retina = field_of_view(fundus.images) & ~fundus.masks["vessel"] & ~fundus.masks["disc"]
    assert ratio[fundus.masks["vessel"] & ~fundus.masks["disc"]].mean() > 1.1 * ratio[retina].mean()


def test_disc_is_the_brightest_structure(fundus: PhantomSet) -> None:
    green = fundus.images[:, 1].astype(float)
    retina = field_of_view(fundus.images) & ~fundus.masks["disc"]
    for g, disc, rest in zip(green, fundus.masks["disc"], retina, strict=True):
        assert g[disc].mean() > 1.5 * g[rest].mean()


def test_outside_the_field_of_view_is_black(fundus: PhantomSet) -> None:
    outside = radius_from_centre(SIZE) > 1.03  # the field of view's radius is at most 0.99
    assert fundus.images[:, :, outside].max() <= 8
    assert not fundus.masks["vessel"][:, outside].any()


# ----------------------------------------------------------------------------------------------------
# Chest X-ray anatomy


def test_two_lungs_one_in_each_half(cxr: PhantomSet) -> None:
    for lungs in cxr.masks["lung"]:
        labels, _ = ndimage.label(lungs)
        sizes = np.bincount(labels.ravel())[1:]
        first, second = np.argsort(sizes)[::-1][:2] + 1
        assert sizes[second - 1] > 0.08 * lungs.size
        assert sizes[first - 1] + sizes[second - 1] > 0.99 * lungs.sum()
        columns = sorted(centroid(labels == k)[1] for k in (first, second))
        assert columns[0] < 0.45 and columns[1] > 0.55


def test_lungs_are_darker_than_the_mediastinum(cxr: PhantomSet) -> None:
    for image, lungs in zip(cxr.images[:, 0].astype(float), cxr.masks["lung"], strict=True):
        rows = lungs.any(axis=1)
        mediastinum = image[rows, int(0.46 * SIZE) : int(0.54 * SIZE)]
        assert image[lungs].mean() < mediastinum.mean() - 40


def test_heart_is_low_and_to_the_image_right(cxr: PhantomSet) -> None:
    for heart in cxr.masks["heart"]:
        row, column = centroid(heart)
        assert row > 0.5  # lower half
        assert column > 0.5  # patient's left, radiological convention


def test_lung_mask_excludes_the_heart_which_overlaps_the_lung_fields(cxr: PhantomSet) -> None:
    lungs, heart = cxr.masks["lung"], cxr.masks["heart"]
    assert not (lungs & heart).any()
    # The heart sits between and partly over the lungs: it touches lung pixels on both sides.
    touching = ndimage.binary_dilation(heart, np.ones((1, 3, 3), bool)) & lungs
    assert touching.any(axis=(1, 2)).all()
    fraction = heart.mean(axis=(1, 2))
    assert ((fraction > 0.03) & (fraction < 0.12)).all(), fraction


def test_heart_is_brighter_than_the_lungs(cxr: PhantomSet) -> None:
    grey = cxr.images[:, 0].astype(float)
    for g, lungs, heart in zip(grey, cxr.masks["lung"], cxr.masks["heart"], strict=True):
        assert g[heart].mean() > g[lungs].mean() + 40


def test_background_outside_the_body_is_dark(cxr: PhantomSet) -> None:
    # The top corners lie above the shoulders and beside the neck in every pose.
    corners = cxr.images[:, 0, :6, :6].astype(float), cxr.images[:, 0, :6, -6:].astype(float)
    assert all(corner.mean() < 25 for corner in corners)


# ----------------------------------------------------------------------------------------------------
# Preview


def test_save_preview_writes_a_png_grid(tmp_path: Path) -> None:
    size, n = 64, 3
    path = save_preview(tmp_path / "sub" / "preview.png", size=size, n=n, seed=1)
    assert path == tmp_path / "sub" / "preview.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    # One column per sample, four rows (two families, images and overlays), each panel at least size px.
    assert width >= n * size and height >= 4 * size
    assert pixels.std() > 20


# ----------------------------------------------------------------------------------------------------
# Angiograms (the fundus phantoms' shape source)


def test_angiogram_vessels_cover_a_few_percent(angiogram: PhantomSet) -> None:
    fraction = angiogram.masks["vessel"].mean(axis=(1, 2))
    assert ((fraction > 0.02) & (fraction < 0.12)).all(), fraction


def test_angiogram_vessels_are_bright_on_a_dark_background(angiogram: PhantomSet) -> None:
    for image, vessels in zip(angiogram.images[:, 0].astype(float), angiogram.masks["vessel"], strict=True):
        around = ndimage.binary_dilation(vessels, iterations=3) & ~vessels
        assert image[vessels].mean() > 2 * image[around].mean()


def test_angiogram_trees_enter_from_the_border(angiogram: PhantomSet) -> None:
    border = np.zeros((SIZE, SIZE), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    for vessels in angiogram.masks["vessel"]:
        labels, _ = ndimage.label(vessels, EIGHT_CONNECTED)
        touching = np.setdiff1d(np.unique(labels[border & vessels]), [0])
        assert np.isin(labels[vessels], touching).mean() > 0.9


def test_a_task_preview_tints_its_masks_marks_its_landmarks_and_draws_both_splits(tmp_path: Path) -> None:
    images = torch.full((2, 1, 32, 32), 100, dtype=torch.uint8)
    masks = torch.zeros((2, 32, 32), dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    landmarks = torch.tensor([[[20.0, 25.0]], [[float("nan"), float("nan")]]])  # (row, col); the second lacks it
    split = SegmentationSplit(images, masks, ("a", "b"), landmarks)
    tinted = _masked(_rgb(images.numpy()), split, 2)
    assert tuple(tinted[0, 8, 8]) == tuple(round(100 + (c * 255 - 100) * 0.55) for c in _GREEN)  # tinted green
    assert tuple(tinted[0, 20, 25]) == (255, 51, 51) and tuple(tinted[0, 25, 20]) == (100, 100, 100)  # row, col
    assert tuple(tinted[1, 20, 25]) == (100, 100, 100)  # a missing landmark draws nothing
    path = save_task_preview(tmp_path / "task.png", SegmentationData(split, split), n=2)
    with Image.open(path) as image:
        assert image.width >= 2 * 32 and image.height >= 4 * 32  # train, its masks, test, its masks
