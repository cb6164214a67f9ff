"""Batched, per-sample image augmentations on ``(B, C, H, W)`` float tensors in ``[0, 1]``.

Every random number is drawn on the CPU from the caller's ``torch.Generator`` and only then moved
to the images' device, so a seed gives the same parameters on any device and the global RNG is
never touched. Parameters are drawn per sample as tensors and applied in one vectorised op
(``affine_grid`` + ``grid_sample`` for geometry, a grouped ``conv2d`` for blur): there is no
per-sample Python loop. Outputs keep the input's dtype and device.

Probabilities ``p`` apply per sample. Parameters are drawn in float64 so that they do not depend on
the images' dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# X-ray convention: map [0, 1] onto [-1, 1].
GREY_MEAN = 0.5
GREY_STD = 0.5
# ITU-R BT.601 luma, as torchvision's rgb_to_grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop
_SAMPLE_MODES = ("bilinear", "nearest")
_EPS = 1e-12


# --- validation and random draws -------------------------------------------------------------


def _check_images(images: Tensor, channels: tuple[int, ...] | None = None) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"expected floating-point images in [0, 1], got dtype {images.dtype}")
    if channels is not None and images.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise ValueError(f"expected {allowed} channels, got {images.shape[1]} (shape {tuple(images.shape)})")


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must be in [0, 1], got {p}")


def _check_range(name: str, bounds: tuple[float, float], minimum: float = 0.0) -> None:
    low, high = bounds
    if not minimum <= low <= high:
        raise ValueError(f"{name} must be a range (low, high) with {minimum} <= low <= high, got {bounds}")


# Parameters are drawn on the CPU and copied to the images' device with non_blocking=True: a blocking copy
# would wait for the device's queued work, a host sync per augmentation.
def uniform(generator: torch.Generator, shape: tuple[int, ...]) -> Tensor:
    """U[0, 1) in float64 on the CPU, so the draws are the same whatever device the images live on: the source of
    every random parameter here, and of a method's own augmentations."""
    if generator.device.type != "cpu":
        raise ValueError(f"expected a CPU torch.Generator, got one on {generator.device}")
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def _per_sample(values: Tensor, images: Tensor) -> Tensor:
    """(B,) parameters -> (B, 1, 1, 1) on the images' device and dtype, ready to broadcast."""
    return values.to(device=images.device, dtype=images.dtype, non_blocking=True).view(-1, 1, 1, 1)


def select(apply: Tensor, changed: Tensor, images: Tensor) -> Tensor:
    """Per sample: ``changed`` where ``apply`` (B,) is true, else the original images (an augmentation applied with
    a probability)."""
    return torch.where(apply.to(images.device, non_blocking=True).view(-1, 1, 1, 1), changed, images)


# --- normalisation ---------------------------------------------------------------------------


def normalize(images: Tensor) -> Tensor:
    """Standardise channels: ImageNet mean/std for RGB, mean 0.5 / std 0.5 for grey X-rays."""
    _check_images(images)
    channels = images.shape[1]
    if channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif channels == 1:
        mean, std = (GREY_MEAN,), (GREY_STD,)
    else:
        raise ValueError(
            f"normalize expects 1-channel (grey) or 3-channel (RGB) images, got {channels} channels "
            f"(shape {tuple(images.shape)})"
        )
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


# --- geometry --------------------------------------------------------------------------------


def _resample(images: Tensor, theta: Tensor, size: tuple[int, int], mode: str, padding_mode: str) -> Tensor:
    """Sample ``images`` on the affine grid ``theta`` (output -> input, normalised coordinates)."""
    if mode not in _SAMPLE_MODES:
        raise ValueError(f"mode must be one of {_SAMPLE_MODES}, got {mode!r}")
    theta = theta.to(device=images.device, dtype=images.dtype, non_blocking=True)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def _theta_from_pixel_map(matrices: Tensor, height: int, width: int) -> Tensor:
    """(B, 2, 2) linear maps of centred pixel coordinates (x, y), output -> input, as a theta.

    affine_grid scales x by 2/W and y by 2/H, so the off-diagonal terms take the aspect ratio;
    without it a rotation of a non-square image would shear it.
    """
    theta = torch.zeros(matrices.shape[0], 2, 3, dtype=matrices.dtype)
    theta[:, 0, 0] = matrices[:, 0, 0]
    theta[:, 0, 1] = matrices[:, 0, 1] * (height / width)
    theta[:, 1, 0] = matrices[:, 1, 0] * (width / height)
    theta[:, 1, 1] = matrices[:, 1, 1]
    return theta


def _rotation_matrices(angles_deg: Tensor) -> Tensor:
    """Output -> input maps that turn the content counter-clockwise on screen (y points down)."""
    radians = torch.deg2rad(angles_deg.detach().to(device="cpu", dtype=torch.float64))
    cos, sin = torch.cos(radians), torch.sin(radians)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _rotate(images: Tensor, angles_deg: Tensor, mode: str = "bilinear") -> Tensor:
    """Rotate each image counter-clockwise by its angle (degrees) about the centre, zero fill.

    A positive angle turns the content like ``torch.rot90(x, 1, dims=(-2, -1))`` and torchvision's
    ``rotate``.
    """
    _check_images(images)
    height, width = images.shape[-2:]
    theta = _theta_from_pixel_map(_rotation_matrices(angles_deg), height, width)
    return _resample(images, theta, (height, width), mode, padding_mode="zeros")


def random_rotation(images: Tensor, degrees: float, generator: torch.Generator, mode: str = "bilinear") -> Tensor:
    """Rotate each image by an angle ~ U(-degrees, degrees) about its centre; same size, zero fill."""
    _check_images(images)
    if degrees < 0:
        raise ValueError(f"degrees must be >= 0, got {degrees}")
    angles = degrees * (2.0 * uniform(generator, (images.shape[0],)) - 1.0)
    return _rotate(images, angles, mode)


def random_flip(
    images: Tensor,
    generator: torch.Generator,
    horizontal: bool = True,
    vertical: bool = False,
    p: float = 0.5,
) -> Tensor:
    """Flip each image left-right (``horizontal``) and/or upside-down (``vertical``), each with ``p``."""
    _check_images(images)
    _check_probability(p)
    for enabled, dim in ((horizontal, -1), (vertical, -2)):
        if enabled:
            flip = uniform(generator, (images.shape[0],)) < p
            images = select(flip, images.flip(dim), images)
    return images


def _crop_boxes(
    height: int,
    width: int,
    batch: int,
    generator: torch.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample (top, left, h, w) in pixels, sampled like torchvision's RandomResizedCrop."""
    draws = uniform(generator, (2, batch, _CROP_ATTEMPTS))
    area = height * width * (scale[0] + (scale[1] - scale[0]) * draws[0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * draws[1])
    w_try = torch.round(torch.sqrt(area * aspect))
    h_try = torch.round(torch.sqrt(area / aspect))
    fits = (w_try > 0) & (w_try <= width) & (h_try > 0) & (h_try <= height)
    # argmax returns the first maximum, i.e. the first attempt that fits, like torchvision's loop.
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    fallback_h, fallback_w = _centre_crop_size(height, width, ratio)
    h = torch.where(found, h_try.gather(1, first).squeeze(1), float(fallback_h))
    w = torch.where(found, w_try.gather(1, first).squeeze(1), float(fallback_w))
    offsets = uniform(generator, (2, batch))
    # The min() guards against u * n rounding up to n in floating point.
    top = torch.minimum(torch.floor(offsets[0] * (height - h + 1)), height - h)
    left = torch.minimum(torch.floor(offsets[1] * (width - w + 1)), width - w)
    top = torch.where(found, top, torch.floor((height - h) / 2))
    left = torch.where(found, left, torch.floor((width - w) / 2))
    return top, left, h, w


def _centre_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return round(width / ratio[0]), width
    if in_ratio > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def random_resized_crop(
    images: Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:
    """Crop a random box per image and resize it bilinearly to ``(size, size)``.

    The box area is a fraction ~ U(scale) of the image and its aspect ratio is log-uniform in
    ``ratio``; after 10 failed attempts a centre crop is used, as in torchvision. The resize does
    not antialias, so strong downscaling aliases a little more than torchvision's default.
    """
    _check_images(images)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    _check_range("scale", scale)
    _check_range("ratio", ratio, minimum=_EPS)
    batch, _, height, width = images.shape
    top, left, h, w = _crop_boxes(height, width, batch, generator, scale, ratio)
    theta = torch.zeros(batch, 2, 3, dtype=torch.float64)
    # Map the output's [-1, 1] edges onto the box's pixel edges (align_corners=False convention).
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    # Border padding: the half pixel outside the box edge clamps like F.interpolate, not to zero.
    return _resample(images, theta, (size, size), "bilinear", padding_mode="border")


def random_flip_rotate(
    images: Tensor, masks: Tensor, degrees: float, generator: torch.Generator, flips: bool = True
) -> tuple[Tensor, Tensor]:
    """Downstream segmentation augmentation: flips (each p=0.5, if ``flips``) then a rotation ~ U(-deg, deg).

    Image and mask of a sample share one geometric transform; the image is resampled bilinearly
    and the mask ``(B, 1, H, W)`` by nearest neighbour so that it stays binary. Zero fill. The same random
    numbers are drawn either way, so that ``flips`` changes nothing but the flips.
    """
    _check_images(images)
    if masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"expected masks of shape (B, 1, H, W) matching images {tuple(images.shape)}, got {tuple(masks.shape)}"
        )
    if masks.shape[0] != images.shape[0]:
        raise ValueError(f"images and masks differ in batch size: {images.shape[0]} vs {masks.shape[0]}")
    if degrees < 0:
        raise ValueError(f"degrees must be >= 0, got {degrees}")
    batch, _, height, width = images.shape
    draws = uniform(generator, (3, batch))
    flip_x = torch.where(draws[0] < 0.5 * flips, -1.0, 1.0).to(torch.float64)
    flip_y = torch.where(draws[1] < 0.5 * flips, -1.0, 1.0).to(torch.float64)
    matrices = _rotation_matrices(degrees * (2.0 * draws[2] - 1.0))
    # Output -> input map is flip @ rotation: the flip acts first on the image, then the rotation.
    matrices = matrices * torch.stack([flip_x, flip_y], -1).unsqueeze(-1)
    theta = _theta_from_pixel_map(matrices, height, width)
    out_images = _resample(images, theta, (height, width), "bilinear", padding_mode="zeros")
    mask_values = masks.to(images.dtype)
    out_masks = _resample(mask_values, theta, (height, width), "nearest", padding_mode="zeros")
    return out_images, out_masks.to(masks.dtype)


# --- colour ----------------------------------------------------------------------------------


def _luma(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) ITU-R 601 luma; grey images are their own luma."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * images + (1.0 - factor) * other).clamp(0.0, 1.0)


def _rgb_to_hsv(images: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> HSV, all in [0, 1]; hue 0 where the pixel is grey."""
    red, green, blue = images.unbind(dim=1)
    value, argmax = images.max(dim=1)
    delta = value - images.min(dim=1).values
    saturation = delta / value.clamp_min(_EPS)
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(
        argmax == 0,
        (green - blue) / safe_delta,
        torch.where(argmax == 1, 2.0 + (blue - red) / safe_delta, 4.0 + (red - green) / safe_delta),
    )
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return torch.stack([hue, saturation, value], dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`_rgb_to_hsv`, using the closed form f(n) = V - V S clamp(min(k, 4 - k))."""
    hue, saturation, value = hsv.unbind(dim=1)
    channels = []
    for n in (5.0, 3.0, 1.0):  # red, green, blue
        k = torch.remainder(n + 6.0 * hue, 6.0)
        channels.append(value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))
    return torch.stack(channels, dim=1)


def _shift_hue(images: Tensor, shifts: Tensor) -> Tensor:
    """Rotate the hue of each RGB image by its shift (fraction of a turn), like adjust_hue."""
    hsv = _rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + _per_sample(shifts, images)[:, 0], 1.0)
    return _hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0.0, 1.0)


def _jitter(
    images: Tensor,
    brightness: Tensor | None,
    contrast: Tensor | None,
    saturation: Tensor | None,
    hue: Tensor | None,
) -> Tensor:
    """Apply per-sample (B,) jitter factors in the fixed order brightness, contrast, saturation,
    hue, clamping to [0, 1] after each; ``None`` skips an op. Saturation and hue only touch RGB."""
    if brightness is not None:
        images = (images * _per_sample(brightness, images)).clamp(0.0, 1.0)
    if contrast is not None:
        mean = _luma(images).mean(dim=(1, 2, 3), keepdim=True)
        images = _blend(images, mean, _per_sample(contrast, images))
    if images.shape[1] == 1:
        return images
    if saturation is not None:
        images = _blend(images, _luma(images), _per_sample(saturation, images))
    if hue is not None:
        images = _shift_hue(images, hue)
    return images


def _factor(strength: float, draws: Tensor) -> Tensor | None:
    """ColorJitter's multiplicative factor ~ U(max(0, 1 - x), 1 + x); None when x is 0."""
    if strength == 0:
        return None
    low = max(0.0, 1.0 - strength)
    return low + (1.0 + strength - low) * draws


def color_jitter(
    images: Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 1.0,
) -> Tensor:
    """Per-sample colour jitter with torchvision ColorJitter's factor ranges, applied with ``p``.

    The order is fixed: brightness, contrast, saturation, hue (torchvision permutes it randomly).
    Contrast blends with the mean of each image's luma. On 1-channel images only brightness and
    contrast apply. The result is clamped to [0, 1].
    """
    _check_images(images, channels=(1, 3))
    _check_probability(p)
    for name, strength in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if strength < 0:
            raise ValueError(f"{name} must be >= 0, got {strength}")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    # One draw per op whether or not it is enabled, so enabling one op keeps the others' factors.
    draws = uniform(generator, (5, images.shape[0]))
    jittered = _jitter(
        images,
        brightness=_factor(brightness, draws[1]),
        contrast=_factor(contrast, draws[2]),
        saturation=_factor(saturation, draws[3]),
        hue=hue * (2.0 * draws[4] - 1.0) if hue > 0 else None,
    )
    return select(draws[0] < p, jittered, images)


def random_grayscale(images: Tensor, generator: torch.Generator, p: float = 0.2) -> Tensor:
    """With ``p`` per sample, replace an RGB image by its ITU-R 601 luma on all 3 channels.

    1-channel images are already grey and are returned as they are (the generator still advances).
    """
    _check_images(images, channels=(1, 3))
    _check_probability(p)
    apply = uniform(generator, (images.shape[0],)) < p
    if images.shape[1] == 1:
        return images
    return select(apply, _luma(images).expand_as(images), images)


# --- blur ------------------------------------------------------------------------------------


def _gaussian_kernels(sigmas: Tensor, kernel_size: int) -> Tensor:
    """(B,) sigmas -> (B, kernel_size) normalised 1-D Gaussian kernels, float64 on the CPU."""
    radius = kernel_size // 2
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    sigmas = sigmas.detach().to(device="cpu", dtype=torch.float64).view(-1, 1)
    kernels = torch.exp(-0.5 * (x / sigmas) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _blur(images: Tensor, sigmas: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding, in two grouped convs."""
    batch, channels, height, width = images.shape
    if images.numel() == 0:
        return images.clone()
    radius = kernel_size // 2
    kernels = _gaussian_kernels(sigmas, kernel_size).to(device=images.device, dtype=images.dtype, non_blocking=True)
    # Fold the batch into the channel axis so that each (sample, channel) plane gets its own kernel.
    weight = kernels.repeat_interleave(channels, dim=0)
    planes = images.reshape(1, batch * channels, height, width)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, weight.view(-1, 1, 1, kernel_size), groups=batch * channels)
    planes = F.conv2d(planes, weight.view(-1, 1, kernel_size, 1), groups=batch * channels)
    return planes.view(batch, channels, height, width)


def _kernel_size_for(sigma_max: float, height: int, width: int) -> int:
    """Odd size covering +-3 sigma, capped so that reflect padding fits inside the image."""
    radius = min(math.ceil(3.0 * sigma_max), min(height, width) - 1)
    return 2 * radius + 1


def gaussian_blur(
    images: Tensor,
    generator: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
    p: float = 0.5,
    kernel_size: int | None = None,
) -> Tensor:
    """With ``p`` per sample, blur with a Gaussian of sigma ~ U(sigma) (separable, reflect padding).

    ``kernel_size`` defaults to the odd size covering +-3 of the largest sigma, capped by the image.
    """
    _check_images(images)
    _check_probability(p)
    _check_range("sigma", sigma, minimum=_EPS)
    height, width = images.shape[-2:]
    if kernel_size is None:
        kernel_size = _kernel_size_for(sigma[1], height, width)
    elif kernel_size <= 0 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    elif kernel_size // 2 >= min(height, width):
        raise ValueError(f"kernel_size {kernel_size} is too large for {height}x{width} images")
    draws = uniform(generator, (2, images.shape[0]))
    sigmas = sigma[0] + (sigma[1] - sigma[0]) * draws[1]
    return select(draws[0] < p, _blur(images, sigmas, kernel_size), images)


def contrastive_view(
    images: Tensor, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.2, 1.0)
) -> Tensor:
    """One normalised view in the style of SimCLR/MoCo v2, shared by the global baselines.

    Crop and resize, flips (vertical too: medical images have no canonical up), colour jitter
    (brightness and contrast only on grey images) with p=0.8, grayscale with p=0.2 (a no-op on grey
    images), Gaussian blur with p=0.5.
    """
    views = random_resized_crop(images, size, generator, scale=scale)
    views = random_flip(views, generator, horizontal=True, vertical=True)
    views = color_jitter(views, generator, 0.4, 0.4, 0.4, 0.1, p=0.8)
    views = random_grayscale(views, generator, p=0.2)
    views = gaussian_blur(views, generator, p=0.5)
    return normalize(views)
