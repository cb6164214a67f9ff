"""The phantoms' shared core: :class:`PhantomSet`, the smallest supported size, and the machinery that
draws a set one image at a time, each from its own random streams (``_Family``, ``_make``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Smallest supported image side in pixels.
MIN_SIZE = 32

_Sample = tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]
# (shape generator, pixel-noise generator, size) -> image (C, H, W) uint8, masks (H, W) bool, points (row, col)
_Draw = Callable[[np.random.Generator, np.random.Generator, int], _Sample]


@dataclass(frozen=True)
class PhantomSet:
    """Images ``uint8 (N, C, H, W)`` with named binary masks ``bool (N, H, W)`` and named landmark points
    ``float32 (N, 2)`` in pixel ``(row, col)`` (pixel centres at integers; NaN where an image lacks the point)."""

    images: np.ndarray
    masks: dict[str, np.ndarray]
    landmarks: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        shape = (self.images.shape[0], *self.images.shape[2:])
        for name, mask in self.masks.items():
            if mask.dtype != np.bool_ or mask.shape != shape:
                raise ValueError(f"mask {name!r} must be bool {shape}, got {mask.dtype} {mask.shape}")
        for name, points in self.landmarks.items():
            if points.dtype != np.float32 or points.shape != (shape[0], 2):
                raise ValueError(
                    f"landmark {name!r} must be float32 ({shape[0]}, 2), got {points.dtype} {points.shape}"
                )

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------------------------------
# Common machinery


@dataclass(frozen=True)
class _Family:
    stream: int  # keeps a fundus and a chest X-ray with the same (seed, index) unrelated
    channels: int
    masks: tuple[str, ...]
    landmarks: tuple[str, ...] = ()


def _make(draw: _Draw, family: _Family, n: int, size: int, seed: int, start: int) -> PhantomSet:
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    images = np.zeros((n, family.channels, size, size), np.uint8)
    masks = {name: np.zeros((n, size, size), bool) for name in family.masks}
    landmarks = {name: np.zeros((n, 2), np.float32) for name in family.landmarks}
    for i in range(n):
        # Shapes and pixel noise come from separate streams: the noise draws depend on the size, and
        # sharing a stream would make the anatomy depend on it too.
        key = [seed, start + i, family.stream]
        image, sample_masks, points = draw(np.random.default_rng([*key, 0]), np.random.default_rng([*key, 1]), size)
        images[i] = image
        for name in family.masks:
            masks[name][i] = sample_masks[name]
        for name in family.landmarks:
            landmarks[name][i] = points[name]
    return PhantomSet(images, masks, landmarks)
