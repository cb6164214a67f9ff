"""Shared drawing helpers: the normalised pixel grid, blurs and smooth noise, soft edges, rotations,
closed curves and their filling, and the conversion to ``uint8``."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates: ``x`` of shape (1, size) and ``y`` of shape (size, 1)."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2 / size) - 1
    x, y = centres[None, :], centres[:, None]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised ``(..., 2)`` xy to pixel ``(..., 2)`` xy, pixel centres at integers."""
    return (points + 1) * (size / 2) - 0.5


def _squared_distance(size: int, centre: np.ndarray, radii: np.ndarray | None = None) -> np.ndarray:
    """Squared normalised distance of every pixel centre from ``centre``, axes scaled by ``radii``."""
    x, y = _grid(size)
    # Python floats keep the float32 grid float32 (NumPy scalars would promote it to float64).
    rx, ry = (1.0, 1.0) if radii is None else (float(radii[0]), float(radii[1]))
    return ((x - float(centre[0])) / rx) ** 2 + ((y - float(centre[1])) / ry) ** 2


def _blur(image: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Gaussian blur by ``sigma`` normalised units (the same look at every size)."""
    return ndimage.gaussian_filter(image, sigma * size / 2, mode="nearest", truncate=3.0)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise blurred by ``sigma`` normalised units."""
    noise = _blur(rng.standard_normal((size, size), np.float32), sigma, size)
    return noise / max(float(noise.std()), 1e-6)


def _low_frequency(rng: np.random.Generator, size: int, terms: int, max_freq: float) -> np.ndarray:
    """A smooth random field (a sum of plane waves) of about unit amplitude, identical at every size."""
    x, y = _grid(size)
    field = np.zeros((size, size), np.float32)
    for _ in range(terms):
        fx, fy = rng.uniform(-max_freq, max_freq, 2)
        field += np.cos(float(fx) * x + float(fy) * y + rng.uniform(0, 2 * np.pi))
    return field / np.float32(np.sqrt(terms / 2))


def _soft_edge(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp ``width`` wide across a signed distance (negative inside)."""
    return np.clip(0.5 - signed_distance / width, 0, 1)


def _smooth_max(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """max(a, b), rounded where the two are within ``k`` of each other."""
    h = np.clip(0.5 + 0.5 * (a - b) / k, 0, 1)
    return b + (a - b) * h + k * h * (1 - h)


def _unit(angle: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], -1)


def _rotation(angle: float) -> np.ndarray:
    """Matrix that rotates row vectors (``xy @ R``) by ``angle`` (clockwise on screen, since y is down)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


def _closed_curve(control: np.ndarray, per_edge: int = 6) -> np.ndarray:
    """A smooth closed Catmull-Rom curve ``(K * per_edge, 2)`` through the control points ``(K, 2)``."""
    p0, p1, p2, p3 = (np.roll(control, shift, 0)[:, None, :] for shift in (1, 0, -1, -2))
    t = (np.arange(per_edge) / per_edge)[None, :, None]
    curve = p1 + 0.5 * t * ((p2 - p0) + t * ((2 * p0 - 5 * p1 + 4 * p2 - p3) + t * (3 * (p1 - p2) + p3 - p0)))
    return curve.reshape(-1, 2)


def _fill(curve: np.ndarray, size: int) -> np.ndarray:
    """Mask of the pixels whose centres lie inside the closed normalised curve (even-odd rule)."""
    x0, y0 = _to_pixels(curve, size).T
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(size, dtype=np.float64)[:, None]
    # Half-open crossing rule, so that a vertex lying on a row is counted once.
    row, edge = np.nonzero((y0 <= rows) != (y1 <= rows))
    x = x0[edge] + (row - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    # A pixel is inside when an odd number of crossings lie left of it: toggle at each one, then scan.
    toggles = np.zeros((size, size + 1), np.int32)
    np.add.at(toggles, (row, np.clip(np.ceil(x), 0, size).astype(np.int64)), 1)
    return (np.cumsum(toggles[:, :size], axis=1) % 2).astype(bool)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
