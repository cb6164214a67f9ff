"""Chest X-rays: a density (attenuation) map in the patient's frame, then the detector's response.

Radiological convention: the patient's left (heart apex, aortic knob, gastric bubble) is on the image's right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_bench.data.phantoms.core import _Sample
from ssl_bench.data.phantoms.drawing import (
    _blur,
    _closed_curve,
    _fill,
    _grid,
    _rotation,
    _smooth_max,
    _smooth_noise,
    _soft_edge,
    _to_pixels,
    _unit,
    to_uint8,
)
from ssl_bench.data.phantoms.vessels import _Branching, _render_tubes, _tree, _walk

# Right lung (image left) in the patient frame, clockwise from the apex; the left lung mirrors it.
_LUNG_OUTLINE = np.array(
    [
        (-0.40, -0.80), (-0.30, -0.78), (-0.23, -0.66), (-0.19, -0.45), (-0.18, -0.20), (-0.17, 0.05),
        (-0.15, 0.27), (-0.19, 0.44), (-0.36, 0.42), (-0.52, 0.44), (-0.66, 0.52), (-0.79, 0.64),
        (-0.84, 0.42), (-0.84, 0.12), (-0.79, -0.24), (-0.69, -0.55), (-0.55, -0.75),
    ]
)  # fmt: skip
# The aortic knob pushes the left lung's upper medial border outwards: vertex index -> shift in u.
_AORTIC_KNOB = {3: 0.06, 4: 0.02}
_APEX_LEVEL = -0.8
_BASE_LEVEL = 0.44  # medial end of the diaphragm, where the heart rests


@dataclass(frozen=True)
class _Pose:
    """Where the patient stands: image xy = centre + scale * (patient uv rotated by angle)."""

    centre: np.ndarray
    scale: float
    angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Pose:
        return cls(rng.uniform([-0.04, -0.02], [0.04, 0.06]), rng.uniform(0.86, 0.98), rng.uniform(-0.06, 0.06))

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        return self.centre + self.scale * (uv @ _rotation(self.angle))

    def patient_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame ``u`` and ``v`` of every pixel centre, ``(size, size)`` each."""
        x, y = _grid(size)
        dx, dy = x - np.float32(self.centre[0]), y - np.float32(self.centre[1])
        c, s = np.float32(np.cos(self.angle) / self.scale), np.float32(np.sin(self.angle) / self.scale)
        return dx * c + dy * s, dy * c - dx * s


def _cxr(rng: np.random.Generator, noise: np.random.Generator, size: int) -> _Sample:
    pose = _Pose.sample(rng)
    u, v = pose.patient_grid(size)
    lungs, heart, base = _chest_outlines(rng, pose, size)
    lung_soft = _blur(lungs.astype(np.float32), 0.012, size)
    heart_soft = _blur(heart.astype(np.float32), 0.015, size)
    # A lung is thinner near its edges and holds less air there: a wide blur stands in for its thickness.
    thickness = _blur(lungs.astype(np.float32), 0.08, size)
    # Lung seen past the heart: ribs and vessels show there, much less through the heart.
    open_lung = lung_soft * (1 - 0.92 * heart_soft)
    air = open_lung * (0.4 + 0.6 * thickness)
    # The markings get their own stream: how many branches survive clipping depends on the size.
    markings = _lung_markings(np.random.default_rng(rng.integers(1 << 62)), pose, lungs)
    density = (
        _soft_tissue(rng, u, v, base)
        + _mediastinum(rng, u, v)
        + _clavicles(rng, u, v)
        + _ribs(rng, u, v, base) * (0.3 + 0.7 * open_lung)
        + 0.09 * markings * open_lung
        + 0.05 * heart_soft
        - rng.uniform(0.34, 0.44) * air
        - _gastric_bubble(rng, u, v, base)
    )
    return _radiograph(rng, noise, density)[None], {"lung": lungs & ~heart, "heart": heart}, {}


def _chest_outlines(rng: np.random.Generator, pose: _Pose, size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Masks of both lungs and of the heart, and the patient-frame level of the diaphragm under the heart."""
    depth = rng.uniform(0.9, 1.08)  # depth of inspiration: how far down the diaphragm sits
    width = rng.uniform(0.93, 1.04)
    lungs = np.zeros((size, size), bool)
    for side, lower in ((-1.0, 1.0), (1.0, rng.uniform(1.02, 1.06))):  # the left hemidiaphragm sits lower
        outline = _LUNG_OUTLINE.copy()
        if side > 0:
            for vertex, shift in _AORTIC_KNOB.items():
                outline[vertex, 0] -= shift
        outline[:, 0] *= side * width * rng.uniform(0.97, 1.03)
        outline[:, 1] = _APEX_LEVEL + (outline[:, 1] - _APEX_LEVEL) * depth * lower
        outline += rng.normal(0, 0.012, outline.shape)
        lungs |= _fill(pose.to_image(_closed_curve(outline)), size)
    base = _APEX_LEVEL + (_BASE_LEVEL - _APEX_LEVEL) * depth
    return lungs, _fill(pose.to_image(_heart_outline(rng, base)), size), base


def _heart_outline(rng: np.random.Generator, base: float) -> np.ndarray:
    """A tilted ellipse, apex down towards the patient's left, flattened where it rests on the diaphragm."""
    radii = rng.uniform([0.34, 0.24], [0.42, 0.29])
    ellipse = _unit(np.linspace(0, 2 * np.pi, 12, endpoint=False)) * radii * (1 + rng.normal(0, 0.025, (12, 1)))
    centre = np.array([rng.uniform(0.12, 0.19), base - rng.uniform(0.18, 0.24)])
    curve = _closed_curve(centre + ellipse @ _rotation(rng.uniform(0.35, 0.65)), 8)
    curve[:, 1] = np.minimum(curve[:, 1], base + 0.03)
    return curve


def _soft_tissue(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: float) -> np.ndarray:
    """Chest wall, shoulders, neck and abdomen: thicker (denser) towards the midline, air around."""
    half_width = rng.uniform(0.95, 1.04) * (1 - 0.05 * (v - 0.2) ** 2)
    neck = rng.uniform(0.26, 0.32)
    au = np.abs(u)
    shoulder = np.clip((au - neck) / (half_width - neck), 0, 1)
    torso = np.minimum(half_width - au, v + 0.95 - 0.2 * shoulder**2)
    inside = _smooth_max(torso, neck - au, 0.12)  # the neck meets the shoulders in a curve
    # Tissue thins to nothing at the skin, so the body's edge is a ramp rather than a step.
    body = np.sqrt(np.clip(inside / 0.12, 0, 1))
    # Depth along the beam: an elliptic cross-section, narrower (the neck) above the shoulders.
    in_neck = np.clip((-0.8 - v) / 0.15, 0, 1)
    depth = (1 - in_neck) * _chord(u, half_width) + in_neck * 0.7 * _chord(u, neck)
    abdomen = 0.07 * np.clip((v - base + 0.05) / 0.3, 0, 1)
    humeri = sum(_soft_edge(np.hypot(u - side * half_width, v + 0.76) - 0.14, 0.04) for side in (-1, 1))
    return body * (rng.uniform(0.14, 0.2) + 0.46 * depth + abdomen + 0.14 * humeri)


def _chord(u: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """Relative chord length through an ellipse of the given half-width, at lateral offset ``u``."""
    return np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))


def _mediastinum(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spine with faint vertebral bodies, and the dark tracheal air column down to the carina."""
    period = rng.uniform(0.085, 0.1)
    vertebrae = 0.85 + 0.15 * np.cos(2 * np.pi * (v / period + rng.uniform()))
    spine = 0.06 * _soft_edge(np.abs(u) - 0.07, 0.03) * vertebrae
    carina = rng.uniform(-0.36, -0.28)
    trachea = _soft_edge(np.abs(u) - 0.045, 0.03) * _soft_edge(v - carina, 0.06)
    return spine - 0.08 * trachea


def _clavicles(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Two oblique S-curved bands from beside the trachea up and out to the shoulders."""
    medial, lateral = rng.uniform(-0.66, -0.58), rng.uniform(-0.86, -0.78)
    q = (np.abs(u) - 0.08) / 0.66  # 0 at the medial end, 1 at the lateral end
    centre = medial + (lateral - medial) * q + 0.025 * np.sin(2 * np.pi * q)
    slope = (lateral - medial) / 0.66
    half = 0.03 * (1.1 - 0.2 * np.clip(q, 0, 1))
    distance = np.abs(v - centre) / np.sqrt(1 + slope**2)
    ends = np.clip(q * 12, 0, 1) * np.clip((1.1 - q) * 12, 0, 1)
    return rng.uniform(0.08, 0.12) * _soft_edge(distance - half, 0.025) * ends


def _ribs(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: float) -> np.ndarray:
    """Posterior ribs arching up and out from the spine, and fainter anterior ribs sloping the other way."""
    q = np.clip((np.abs(u) - 0.06) / 0.82, 0, 1.2)
    spacing = rng.uniform(0.11, 0.13)
    arch = rng.uniform(0.55, 0.75) * ((q - 0.3) ** 2 - 0.09)
    # A slow random warp keeps the ribs from looking ruled.
    warp = 0.12 * np.sin(rng.uniform(2, 5) * v + rng.uniform(0, 2 * np.pi)) * np.sin(rng.uniform(2, 4) * u)
    posterior = _bands((v - arch) / spacing + warp + rng.uniform(), 0.45)
    anterior = _bands((v + rng.uniform(0.3, 0.4) * q**1.5) / (1.15 * spacing) + rng.uniform(), 0.35)
    chest = _soft_edge(q - 1.0, 0.1) * _soft_edge(v - base - 0.2, 0.1) * _soft_edge(-0.86 - v, 0.05)
    return rng.uniform(0.055, 0.08) * (posterior + 0.5 * anterior) * chest


def _bands(phase: np.ndarray, duty: float) -> np.ndarray:
    """Periodic bands ``duty`` of each period wide, brighter at their (cortical) edges."""
    f = (2 / duty) * (phase % 1) - 1  # -1..1 across a band, > 1 between bands
    f2 = f * f
    return (f < 1) * (0.7 + 0.3 * f2 * f2)


def _lung_markings(rng: np.random.Generator, pose: _Pose, lungs: np.ndarray) -> np.ndarray:
    """Pulmonary vessels branching out of both hila: faint bright lines, denser centrally."""
    size = lungs.shape[0]
    per_side = 5
    hila = np.array([[-0.28, -0.08], [0.28, -0.12]]) + rng.normal(0, 0.02, (2, 2))
    spread = np.tile(np.linspace(-1.2, 1.2, per_side), 2)
    count = 2 * per_side
    roots = _walk(
        rng,
        start=pose.to_image(np.repeat(hila, per_side, axis=0)),
        heading=np.repeat([np.pi, 0.0], per_side) + np.repeat([-1, 1], per_side) * spread + pose.angle,
        length=rng.uniform(0.3, 0.55, count),
        width=rng.uniform(0.02, 0.028, count),
        kind=np.zeros(count, int),
        wiggle=1.0,
    )
    generations = [
        _Branching(spacing=0.12, min_arc=0.04, width_ratio=(0.55, 0.8), length=(0.1, 0.3), wiggle=1.5),
        _Branching(spacing=0.15, min_arc=0.03, width_ratio=(0.6, 0.85), length=(0.05, 0.15), wiggle=1.5),
    ]

    def in_lung(xy: np.ndarray) -> np.ndarray:
        cols, rows = np.moveaxis(np.clip(np.rint(_to_pixels(xy, size)), 0, size - 1).astype(np.int64), -1, 0)
        return lungs[rows, cols]

    tree = _tree(rng, [roots], in_lung, generations)
    marks, _ = _render_tubes(tree, size, kinds=1, min_px=0.0, contrast=np.ones_like)
    return _blur(marks[0], 0.006, size)


def _gastric_bubble(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: float) -> np.ndarray:
    """Air in the stomach under the left hemidiaphragm, in most films."""
    centre, radii = rng.uniform([0.35, 0.15], [0.5, 0.22]), rng.uniform([0.07, 0.04], [0.11, 0.06])
    strength = rng.uniform(0.06, 0.12) * (rng.random() < 0.7)
    shape = np.hypot((u - centre[0]) / radii[0], (v - base - centre[1]) / radii[1])
    return strength * _soft_edge(shape - 1, 0.5)


def _radiograph(rng: np.random.Generator, noise: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Detector response: slight blur, a random window and gamma, quantum noise."""
    size = density.shape[0]
    image = _blur(density.astype(np.float32), 0.005, size)
    image = np.clip(rng.uniform(1.05, 1.3) * image + rng.uniform(-0.05, 0.03), 0, 1) ** rng.uniform(0.8, 1.2)
    image += noise.normal(0, 0.012, image.shape).astype(np.float32) + 0.012 * _smooth_noise(noise, size, 0.006)
    return to_uint8(image)
