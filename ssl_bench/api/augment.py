"""Batched tensor augmentations on the images' device, every random number from a CPU ``torch.Generator``."""

from ssl_bench.augment import (
    color_jitter,
    contrastive_view,
    gaussian_blur,
    normalize,
    random_flip,
    random_flip_rotate,
    random_grayscale,
    random_resized_crop,
    random_rotation,
    select,
    uniform,
)

__all__ = [
    "color_jitter",
    "contrastive_view",
    "gaussian_blur",
    "normalize",
    "random_flip",
    "random_flip_rotate",
    "random_grayscale",
    "random_resized_crop",
    "random_rotation",
    "select",
    "uniform",
]
