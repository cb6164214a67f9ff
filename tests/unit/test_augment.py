"""Tests for ssl_bench.augment against hand-computed values and independent references."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from ssl_bench import augment as A


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand_images(batch: int = 4, channels: int = 3, height: int = 9, width: int = 9, seed: int = 1):
    return torch.rand(batch, channels, height, width, generator=_gen(seed))


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# Every random op with non-trivial settings, as (images, generator) -> output(s).
RANDOM_OPS: dict[str, Callable] = {
    "random_resized_crop": lambda x, g: A.random_resized_crop(x, 7, g),
    "random_flip": lambda x, g: A.random_flip(x, g, horizontal=True, vertical=True),
    "random_rotation": lambda x, g: A.random_rotation(x, 45.0, g),
    "color_jitter": lambda x, g: A.color_jitter(x, g, p=0.8),
    "random_grayscale": lambda x, g: A.random_grayscale(x, g, p=0.5),
    "gaussian_blur": lambda x, g: A.gaussian_blur(x, g, p=0.5),
    "random_flip_rotate": lambda x, g: A.random_flip_rotate(x, (x[:, :1] > 0.5).to(x.dtype), 30.0, g),
}


# --- normalize -------------------------------------------------------------------------------


def test_normalize_rgb_uses_imagenet_constants():
    images = torch.full((2, 3, 2, 2), 0.5)
    # (0.5 - mean) / std per channel, worked out by hand.
    expected = torch.tensor([0.015 / 0.229, 0.044 / 0.224, 0.094 / 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(A.normalize(images), expected.expand(2, 3, 2, 2))


def test_normalize_grey_maps_unit_interval_to_minus_one_one():
    images = torch.tensor([0.0, 0.25, 1.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(A.normalize(images), torch.tensor([-1.0, -0.5, 1.0]).view(1, 1, 1, 3))


@pytest.mark.parametrize("channels", [2, 4])
def test_normalize_rejects_other_channel_counts(channels):
    with pytest.raises(ValueError, match=r"1-channel .* or 3-channel"):
        A.normalize(torch.zeros(1, channels, 2, 2))


# --- flips and rotations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("horizontal", "vertical", "dims"), [(True, False, [-1]), (False, True, [-2]), (True, True, [-2, -1])]
)
def test_random_flip_with_p_one_equals_torch_flip(horizontal, vertical, dims):
    images = _rand_images(width=6)
    out = A.random_flip(images, _gen(), horizontal=horizontal, vertical=vertical, p=1.0)
    torch.testing.assert_close(out, torch.flip(images, dims), rtol=0, atol=0)


def test_random_flip_with_p_zero_is_identity():
    images = _rand_images()
    out = A.random_flip(images, _gen(), horizontal=True, vertical=True, p=0.0)
    torch.testing.assert_close(out, images, rtol=0, atol=0)


def test_random_flip_decides_per_sample():
    images = _rand_images(batch=64)
    out = A.random_flip(images, _gen(), p=0.5)
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 10 < int(flipped.sum()) < 54


def test_rotate_by_90_is_rot90_counter_clockwise():
    images = _rand_images(height=5, width=5)
    out = A._rotate(images, torch.full((4,), 90.0))
    torch.testing.assert_close(out, torch.rot90(images, 1, dims=(-2, -1)), rtol=0, atol=1e-6)
    out = A._rotate(images, torch.full((4,), -90.0))
    torch.testing.assert_close(out, torch.rot90(images, -1, dims=(-2, -1)), rtol=0, atol=1e-6)


def test_rotate_by_zero_is_identity():
    images = _rand_images(height=5, width=8)
    torch.testing.assert_close(A._rotate(images, torch.zeros(4)), images, rtol=0, atol=1e-6)


def test_rotate_by_different_angles_per_sample():
    images = _rand_images(batch=2, height=7, width=7)
    out = A._rotate(images, torch.tensor([90.0, 180.0]))
    torch.testing.assert_close(out[0], torch.rot90(images[0], 1, dims=(-2, -1)), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1], torch.rot90(images[1], 2, dims=(-2, -1)), rtol=0, atol=1e-6)


def test_rotate_non_square_keeps_pixel_geometry():
    # H=5, W=7: the central 5x5 turns like rot90 and the two side columns come from outside: zero.
    images = _rand_images(height=5, width=7)
    out = A._rotate(images, torch.full((4,), 90.0))
    torch.testing.assert_close(out[..., 1:6], torch.rot90(images[..., 1:6], 1, dims=(-2, -1)), atol=1e-6, rtol=0)
    assert float(out[..., [0, 6]].abs().max()) < 1e-6


def test_rotate_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        A._rotate(_rand_images(), torch.zeros(4), mode="bicubic")


def _centroid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, H, W) -> per-sample (row, col) centre of mass."""
    rows = torch.arange(images.shape[-2], dtype=images.dtype).view(-1, 1)
    cols = torch.arange(images.shape[-1], dtype=images.dtype).view(1, -1)
    mass = images.sum(dim=(1, 2, 3))
    return (images * rows).sum(dim=(1, 2, 3)) / mass, (images * cols).sum(dim=(1, 2, 3)) / mass


def test_random_rotation_angles_stay_within_degrees():
    # One bright pixel 6 px right of the centre of a 21x21 image; its angle after rotation is the
    # drawn angle, measured counter-clockwise on screen.
    images = torch.zeros(32, 1, 21, 21, dtype=torch.float64)
    images[:, :, 10, 16] = 1.0
    row, col = _centroid(A.random_rotation(images, 30.0, _gen()))
    angles = torch.rad2deg(torch.atan2(-(row - 10), col - 10))
    assert float(angles.abs().max()) <= 30.0 + 1.0
    assert float(angles.std()) > 5.0
    torch.testing.assert_close(
        torch.hypot(row - 10, col - 10), torch.full((32,), 6.0, dtype=torch.float64), atol=0.3, rtol=0
    )


def test_random_rotation_with_zero_degrees_is_identity():
    images = _rand_images()
    torch.testing.assert_close(A.random_rotation(images, 0.0, _gen()), images, rtol=0, atol=1e-6)


# --- random resized crop ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 6, 11])
def test_random_resized_crop_full_box_is_plain_resize(size):
    images = _rand_images(height=6, width=6)
    out = A.random_resized_crop(images, size, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    expected = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_random_resized_crop_quarter_box_is_a_window_of_the_image():
    images = _rand_images(batch=32, height=8, width=8)
    out = A.random_resized_crop(images, 4, _gen(), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    origins = set()
    for b in range(images.shape[0]):
        matches = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if torch.allclose(out[b], images[b, :, top : top + 4, left : left + 4], atol=1e-6)
        ]
        assert len(matches) == 1
        origins.add(matches[0])
    assert len(origins) > 5  # boxes are drawn per sample


def test_random_resized_crop_falls_back_to_centre_crop():
    # ratio 4 cannot fit an 8x8 image at full area: torchvision falls back to the full width and
    # height round(8 / 4) = 2, centred at rows 3..4. On a linear ramp, bilinear sampling returns
    # the source coordinate itself: row = top + (i + 0.5) * h / size - 0.5, col = j.
    rows = torch.arange(8, dtype=torch.float64).view(8, 1).expand(8, 8)
    cols = torch.arange(8, dtype=torch.float64).view(1, 8).expand(8, 8)
    images = torch.stack([rows, cols]).unsqueeze(0).repeat(3, 1, 1, 1)
    out = A.random_resized_crop(images, 8, _gen(), scale=(1.0, 1.0), ratio=(4.0, 4.0))
    i = torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(out[:, 0], (3 + (i + 0.5) * 2 / 8 - 0.5).view(8, 1).expand(3, 8, 8))
    torch.testing.assert_close(out[:, 1], cols.expand(3, 8, 8))


@pytest.mark.parametrize(("height", "width"), [(40, 30), (30, 40)])
def test_crop_boxes_fit_and_respect_scale_and_ratio(height, width):
    # Up to 90% of the area at ratio 2 (or 1/2) is 46 px long: attempts overflow either side.
    top, left, h, w = A._crop_boxes(height, width, 500, _gen(), scale=(0.1, 0.9), ratio=(0.5, 2.0))
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= height).all() and (left + w <= width).all())
    area = h * w / (height * width)
    # Rounding w and h to whole pixels moves the area and ratio a little outside the ranges.
    assert float(area.min()) > 0.1 * 0.8 and float(area.max()) < 0.9 * 1.1
    assert float((w / h).min()) > 0.5 * 0.8 and float((w / h).max()) < 2.0 * 1.25
    assert float(area.std()) > 0.1


# --- colour ----------------------------------------------------------------------------------


def test_color_jitter_brightness_only_multiplies_by_factor_in_range():
    images = 0.1 + 0.4 * _rand_images(batch=16)  # no clamping at 1.4x
    out = A.color_jitter(images, _gen(), brightness=0.4, contrast=0, saturation=0, hue=0)
    ratio = out / images
    factors = ratio.flatten(1)[:, 0]
    torch.testing.assert_close(ratio, factors.view(-1, 1, 1, 1).expand_as(ratio))
    assert float(factors.min()) >= 0.6 and float(factors.max()) <= 1.4
    assert float(factors.std()) > 0.05


@pytest.mark.parametrize(("strength", "low", "high"), [(0.4, 0.6, 1.4), (1.5, 0.0, 2.5)])
def test_color_jitter_factors_span_torchvision_range(strength, low, high):
    # Factor ~ U(max(0, 1 - x), 1 + x): 2000 draws come within 1% of both ends.
    images = torch.full((2000, 1, 1, 1), 0.3, dtype=torch.float64)
    factors = A.color_jitter(images, _gen(), brightness=strength, contrast=0, saturation=0, hue=0) / 0.3
    span = high - low
    assert low <= float(factors.min()) < low + 0.01 * span
    assert high - 0.01 * span < float(factors.max()) <= high
    assert abs(float(factors.mean()) - (low + high) / 2) < 0.03 * span


def test_color_jitter_hue_shift_spans_range():
    # Pure red shifted by d in (-1/6, 1/6) is (1, 6d, 0) for d > 0 and (1, 0, -6d) for d < 0.
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1).expand(2000, 3, 1, 1)
    out = A.color_jitter(red, _gen(), brightness=0, contrast=0, saturation=0, hue=0.1)
    shifts = (out[:, 1] - out[:, 2]).flatten() / 6
    torch.testing.assert_close(out[:, 0], torch.ones_like(out[:, 0]))
    assert -0.1 <= float(shifts.min()) < -0.099 and 0.099 < float(shifts.max()) <= 0.1


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_contrast_on_constant_grey_image_is_identity(channels):
    # Contrast blends with the mean luma, which equals a constant grey image (a constant colour
    # image does move towards its luma, as in torchvision).
    images = torch.rand(8, 1, 1, 1, generator=_gen(3)).expand(8, channels, 5, 5).contiguous()
    out = A.color_jitter(images, _gen(), brightness=0, contrast=0.9, saturation=0, hue=0)
    torch.testing.assert_close(out, images)


def test_color_jitter_contrast_blends_towards_mean_luma():
    # Constant colour (0.2, 0.6, 1.0): mean luma = 0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0 = 0.526.
    images = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1).expand(16, 3, 4, 4)
    out = A.color_jitter(images, _gen(), brightness=0, contrast=0.5, saturation=0, hue=0)
    # out = c * x + (1 - c) * 0.526 with one c per image, recovered from the red channel.
    factor = (out[:, 0, 0, 0] - 0.526) / (0.2 - 0.526)
    expected = factor.view(-1, 1, 1, 1) * images + (1 - factor.view(-1, 1, 1, 1)) * 0.526
    torch.testing.assert_close(out, expected.clamp(0, 1))
    assert float(factor.min()) >= 0.5 and float(factor.max()) <= 1.5 and float(factor.std()) > 0.05


def test_color_jitter_saturation_and_hue_on_grey_rgb_is_identity():
    images = _rand_images(batch=8, channels=1).expand(8, 3, 9, 9).contiguous()
    out = A.color_jitter(images, _gen(), brightness=0, contrast=0, saturation=0.9, hue=0.5)
    torch.testing.assert_close(out, images)


def test_color_jitter_on_grey_applies_only_brightness_and_contrast():
    images = 0.3 + 0.3 * _rand_images(batch=8, channels=1)
    full = A.color_jitter(images, _gen(), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    no_colour = A.color_jitter(images, _gen(), brightness=0.4, contrast=0.4, saturation=0, hue=0)
    torch.testing.assert_close(full, no_colour, rtol=0, atol=0)
    assert not torch.allclose(full, images)
    # Without clamping, brightness then contrast is an affine map of each image: out = a * x + d.
    x, y = images.flatten(1), full.flatten(1)
    slope = ((x - x.mean(1, keepdim=True)) * (y - y.mean(1, keepdim=True))).sum(1) / (
        (x - x.mean(1, keepdim=True)) ** 2
    ).sum(1)
    fitted = y.mean(1, keepdim=True) + slope.view(-1, 1) * (x - x.mean(1, keepdim=True))
    torch.testing.assert_close(fitted, y)


def test_jitter_matches_torchvision_per_sample():
    images = _rand_images(batch=3, height=6, width=7)
    b, c, s, h = (torch.tensor(v) for v in ([1.3, 0.7, 1.0], [0.6, 1.4, 1.1], [0.2, 1.6, 1.0], [0.1, -0.3, 0.5]))
    out = A._jitter(images, b, c, s, h)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    for i in range(3):
        # torchvision's grey uses 0.2989 for red; contrast and saturation are written out here with
        # the exact 601 weights: blend(x, y, f) = clamp(f * x + (1 - f) * y).
        ref = TF.adjust_brightness(images[i], float(b[i]))
        luma_mean = (ref * weights).sum(0).mean()
        ref = (c[i] * ref + (1 - c[i]) * luma_mean).clamp(0, 1)
        ref = (s[i] * ref + (1 - s[i]) * (ref * weights).sum(0, keepdim=True)).clamp(0, 1)
        ref = TF.adjust_hue(ref, float(h[i]))
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)


def test_shift_hue_by_a_third_turns_red_into_green():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(A._shift_hue(red, torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))


def test_color_jitter_output_in_unit_range_and_p_zero_identity():
    images = _rand_images(batch=16)
    out = A.color_jitter(images, _gen(), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.5)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(A.color_jitter(images, _gen(), p=0.0), images, rtol=0, atol=0)


def test_color_jitter_rejects_bad_parameters():
    with pytest.raises(ValueError, match="hue"):
        A.color_jitter(_rand_images(), _gen(), hue=0.6)
    with pytest.raises(ValueError, match="channels"):
        A.color_jitter(_rand_images(channels=2), _gen())


def test_random_grayscale_uses_luma():
    images = _rand_images()
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    luma = (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(A.random_grayscale(images, _gen(), p=1.0), luma)
    torch.testing.assert_close(A.random_grayscale(images, _gen(), p=0.0), images, rtol=0, atol=0)


def test_random_grayscale_leaves_grey_images_unchanged():
    images = _rand_images(channels=1)
    torch.testing.assert_close(A.random_grayscale(images, _gen(), p=1.0), images, rtol=0, atol=0)


# --- blur ------------------------------------------------------------------------------------


def test_blur_matches_torchvision_per_sample():
    images = _rand_images(batch=3, height=10, width=12)
    sigmas = torch.tensor([0.3, 1.0, 2.2])
    out = A._blur(images, sigmas, 7)
    for i in range(3):
        ref = TF.gaussian_blur(images[i], kernel_size=[7, 7], sigma=[float(sigmas[i])] * 2)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)


def test_gaussian_blur_default_kernel_covers_three_sigma():
    images = _rand_images(height=16, width=16)
    out = A.gaussian_blur(images, _gen(), sigma=(1.5, 1.5), p=1.0)
    ref = TF.gaussian_blur(images, kernel_size=[2 * math.ceil(4.5) + 1] * 2, sigma=[1.5, 1.5])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_gaussian_blur_keeps_constant_images_and_p_zero():
    constant = torch.full((2, 3, 5, 5), 0.7)
    torch.testing.assert_close(A.gaussian_blur(constant, _gen(), sigma=(5.0, 5.0), p=1.0), constant)
    images = _rand_images()
    torch.testing.assert_close(A.gaussian_blur(images, _gen(), p=0.0), images, rtol=0, atol=0)


def test_gaussian_blur_rejects_bad_kernel_size():
    with pytest.raises(ValueError, match="odd"):
        A.gaussian_blur(_rand_images(), _gen(), kernel_size=4)
    with pytest.raises(ValueError, match="too large"):
        A.gaussian_blur(_rand_images(), _gen(), kernel_size=19)


# --- segmentation augmentation ---------------------------------------------------------------


def test_random_flip_rotate_keeps_mask_binary():
    images = _rand_images(batch=8, height=16, width=12)
    masks = (torch.rand(8, 1, 16, 12, generator=_gen(5)) > 0.5).float()
    out_images, out_masks = A.random_flip_rotate(images, masks, 45.0, _gen())
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert bool(((out_masks == 0) | (out_masks == 1)).all())
    assert out_masks.sum() > 0


def test_random_flip_rotate_without_rotation_flips_image_and_mask_alike():
    masks = (torch.rand(32, 1, 7, 9, generator=_gen(5)) > 0.5).double()
    out_images, out_masks = A.random_flip_rotate(masks.clone(), masks, 0.0, _gen())
    torch.testing.assert_close(out_images, out_masks, rtol=0, atol=1e-12)
    flips = [[], [-1], [-2], [-2, -1]]
    seen = set()
    for b in range(32):
        kinds = [k for k, dims in enumerate(flips) if torch.equal(out_masks[b], torch.flip(masks[b], dims))]
        assert kinds
        seen.add(kinds[0])
    assert seen == {0, 1, 2, 3}


def test_random_flip_rotate_moves_image_and_mask_together():
    # A bright block off the centre: after the shared transform the image's and the mask's
    # centres of mass coincide, and they are spread over the rotations drawn.
    masks = torch.zeros(16, 1, 21, 21, dtype=torch.float64)
    masks[:, :, 3:6, 13:16] = 1.0
    out_images, out_masks = A.random_flip_rotate(masks.clone(), masks, 180.0, _gen())
    img_row, img_col = _centroid(out_images)
    mask_row, mask_col = _centroid(out_masks)
    torch.testing.assert_close(img_row, mask_row, atol=0.5, rtol=0)
    torch.testing.assert_close(img_col, mask_col, atol=0.5, rtol=0)
    assert float(img_row.std()) > 1.0


def test_random_flip_rotate_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="masks"):
        A.random_flip_rotate(_rand_images(), torch.zeros(4, 1, 8, 9), 10.0, _gen())


# --- determinism, RNG hygiene, dtype and device ----------------------------------------------


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_same_seed_same_output_and_other_seed_differs(name):
    op = RANDOM_OPS[name]
    images = _rand_images(batch=8, height=12, width=12)
    first, again, other = (_as_tuple(op(images, _gen(seed))) for seed in (7, 7, 8))
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, c) for a, c in zip(first, other, strict=True))


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_global_rng_is_untouched(name):
    images = _rand_images(batch=4, height=12, width=12)
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    RANDOM_OPS[name](images, _gen())
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_outputs_keep_dtype_and_device(name, dtype):
    images = _rand_images(batch=4, height=12, width=12).to(dtype)
    for out in _as_tuple(RANDOM_OPS[name](images, _gen())):
        assert out.dtype == dtype and out.device == images.device
    assert A.normalize(images).dtype == dtype


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_cuda_matches_cpu(name):
    images = _rand_images(batch=8, height=12, width=12)
    cpu = _as_tuple(RANDOM_OPS[name](images, _gen()))
    cuda = _as_tuple(RANDOM_OPS[name](images.cuda(), _gen()))
    for a, b in zip(cpu, cuda, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-4)
