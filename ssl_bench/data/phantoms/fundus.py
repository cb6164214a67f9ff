"""Fundus photographs: an eye (field of view, optic disc, macula), its arcade and nasal vessel trees, the
retina's shading, and the landmarks :data:`FUNDUS_LANDMARKS` exactly where the generator put them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssl_bench.data.phantoms.core import _Sample
from ssl_bench.data.phantoms.drawing import (
    _low_frequency,
    _smooth_noise,
    _soft_edge,
    _squared_distance,
    _to_pixels,
    to_uint8,
)
from ssl_bench.data.phantoms.vessels import (
    _MIN_VESSEL_PX,
    _STEP,
    _Branching,
    _render_tubes,
    _taper,
    _tree,
    _Vessels,
    _walk,
)

# The four temporal arcades: which way each turns around the macula, and its kind (artery 0, vein 1).
_ARCADE_TURN = np.array([1.0, 1.0, -1.0, -1.0])
_ARCADE_KIND = np.array([0, 1, 0, 1])
# A branching is a landmark only where the branch is drawn for at least this many steps from its start.
_VISIBLE_BRANCH_STEPS = 5

#: The fundus phantoms' landmarks: the disc and fovea centres, and where each temporal arcade first branches
#: after leaving the disc (superior and inferior: above and below the disc in the image).
FUNDUS_LANDMARKS = (
    "optic disc centre",
    "fovea",
    "superior temporal artery, first branching",
    "superior temporal vein, first branching",
    "inferior temporal artery, first branching",
    "inferior temporal vein, first branching",
)


@dataclass(frozen=True)
class _Eye:
    """Where the field of view, optic disc and macula of one fundus photograph lie (normalised)."""

    fov_centre: np.ndarray
    fov_radius: float
    disc: np.ndarray
    disc_radii: np.ndarray  # (rx, ry)
    macula: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Eye:
        fov_centre = rng.uniform(-0.02, 0.02, 2)
        side = rng.choice([-1.0, 1.0])  # right or left eye: the disc lies on the nasal side
        disc = fov_centre + np.array([side * rng.uniform(0.36, 0.5), rng.uniform(-0.12, 0.08)])
        radius = rng.uniform(0.115, 0.145)
        disc_radii = np.array([radius, radius * rng.uniform(1.0, 1.12)])
        # The fovea lies about 2.5 disc diameters temporal to the disc, slightly below it.
        tilt = rng.uniform(0.0, 0.2)
        macula = disc + rng.uniform(0.6, 0.72) * np.array([-side * np.cos(tilt), np.sin(tilt)])
        return cls(fov_centre, rng.uniform(0.9, 0.97), disc, disc_radii, macula)

    def inside(self, xy: np.ndarray) -> np.ndarray:
        """Points inside the field of view (with a small margin) and outside the foveal avascular zone."""
        in_fov = ((xy - self.fov_centre) ** 2).sum(-1) < (self.fov_radius + 0.03) ** 2
        return in_fov & (((xy - self.macula) ** 2).sum(-1) > 0.07**2)


def _fundus(rng: np.random.Generator, noise: np.random.Generator, size: int) -> _Sample:
    eye = _Eye.sample(rng)
    vessels = _fundus_vessels(rng, eye)
    dark, inside = _render_tubes(vessels, size, kinds=2, min_px=_MIN_VESSEL_PX, contrast=_vessel_contrast)
    fov_distance = np.sqrt(_squared_distance(size, eye.fov_centre)) - np.float32(eye.fov_radius)
    disc_distance = np.sqrt(_squared_distance(size, eye.disc, eye.disc_radii))
    image = _fundus_shading(rng, noise, eye, dark, fov_distance, disc_distance)
    # The arcades (the tree's first batch) start inside the field of view, so their branches are its third.
    points = _fundus_landmarks(eye, branches=vessels[2], size=size)
    return image, {"vessel": inside & (fov_distance < 0), "disc": disc_distance <= 1}, points


def _fundus_landmarks(eye: _Eye, branches: _Vessels, size: int) -> dict[str, np.ndarray]:
    """:data:`FUNDUS_LANDMARKS` in pixel ``(row, col)``; an arcade without a visible branching gets NaN.

    An arcade turning ``t`` around the macula moves along ``t`` times the disc-macula axis turned by 90 degrees,
    whose y is the axis's x: it runs above the disc (y down) where ``t`` and the axis's x differ in sign.
    """
    # Arcades 0, 1 (artery, vein) turn one way and 2, 3 the other: the first pair above the disc is superior.
    order = (0, 1, 2, 3) if _ARCADE_TURN[0] * (eye.disc - eye.macula)[0] < 0 else (2, 3, 0, 1)
    first = [_first_branching(branches, vessel) for vessel in order]
    xy = [eye.disc, eye.macula, *first]
    return {
        name: _to_pixels(point, size)[::-1].astype(np.float32) for name, point in zip(FUNDUS_LANDMARKS, xy, strict=True)
    }


def _first_branching(branches: _Vessels, vessel: int) -> np.ndarray:
    """Normalised xy where ``branches`` first leave their parent ``vessel`` with a visible branch; NaN if none does."""
    visible = branches.valid[:, :_VISIBLE_BRANCH_STEPS].all(axis=1) & (branches.parent == vessel)
    if not visible.any():
        return np.full(2, np.nan)
    steps = np.where(visible, branches.parent_step, np.iinfo(np.int64).max)
    return branches.pos[int(np.argmin(steps)), 0]


def _vessel_contrast(diameter_px: np.ndarray) -> np.ndarray:
    # Thin vessels are partly transparent: their contrast drops with their diameter.
    return np.clip(0.45 + 0.2 * diameter_px, 0.45, 1.0)


def _fundus_vessels(rng: np.random.Generator, eye: _Eye) -> list[_Vessels]:
    off_disc = 1.3 * float(eye.disc_radii[1])  # first-generation branches leave outside the disc
    generations = [
        _Branching(spacing=0.35, min_arc=off_disc, width_ratio=(0.5, 0.72), length=(0.25, 0.6), wiggle=1.3),
        _Branching(spacing=0.35, min_arc=0.04, width_ratio=(0.55, 0.8), length=(0.08, 0.25), wiggle=1.3),
    ]
    return _tree(rng, [_arcades(rng, eye), _nasal_vessels(rng, eye)], eye.inside, generations)


def _arcades(rng: np.random.Generator, eye: _Eye) -> _Vessels:
    """The four temporal arcade vessels (artery and vein, up and down), arching around the macula."""
    axis = eye.disc - eye.macula
    rho0 = float(np.hypot(*axis))
    along, across = axis / rho0, np.array([-axis[1], axis[0]]) / rho0
    count = 4
    sweep = rng.uniform(2.0, 2.7, (count, 1))  # angle swept around the macula
    t = np.linspace(0.0, 2.7, int(np.ceil(2.7 * 1.3 * rho0 / _STEP)))[None, :]
    turn = _ARCADE_TURN[:, None]
    # Irregularities of the arcade's radius at a few scales, zero at the disc where every vessel starts.
    wobble = sum(
        rng.uniform(0.0, 0.05 / j, (count, 1)) * np.sin(j * rng.uniform(1.5, 3.0, (count, 1)) * t) for j in (1, 2, 3, 6)
    )
    rho = rho0 * (1 + rng.uniform(0.12, 0.25, (count, 1)) * t + wobble)
    squash = rng.uniform(0.7, 0.95, (count, 1))
    pos = eye.macula + rho[..., None] * (np.cos(t)[..., None] * along + (turn * squash * np.sin(t))[..., None] * across)
    steps = np.sqrt((np.diff(pos, axis=1) ** 2).sum(-1))
    arc = np.concatenate([np.zeros((count, 1)), np.cumsum(steps, axis=1)], axis=1)
    kind = _ARCADE_KIND
    w0 = np.where(kind == 1, rng.uniform(0.027, 0.033, count), rng.uniform(0.021, 0.025, count))
    width = _taper(w0, arc, np.full(count, 2.0), rng.uniform(0.35, 0.5, count))
    return _Vessels(pos, width, arc, t <= sweep, kind)


def _nasal_vessels(rng: np.random.Generator, eye: _Eye) -> _Vessels:
    """Nasal vessels fanning out of the disc away from the macula, plus small temporal ones."""
    outward = float(np.arctan2(*(eye.disc - eye.macula)[::-1]))
    nasal = outward + np.array([1, 1, -1, -1, 0]) * rng.uniform(0.55, 1.25, 5)
    temporal = outward + np.pi + rng.uniform(-0.45, 0.45, 2)
    kind = np.array([0, 1, 0, 1, *rng.integers(0, 2, 3)])
    width = np.where(kind == 1, 0.027, 0.022) * rng.uniform(0.85, 1.1, 7)
    width[4:] *= rng.uniform(0.55, 0.75, 3)
    length = np.concatenate([rng.uniform(0.7, 1.0, 5), rng.uniform(0.3, 0.45, 2)])
    start = np.broadcast_to(eye.disc, (7, 2))
    heading = np.concatenate([nasal, temporal])
    return _walk(rng, start, heading, length, width, kind, wiggle=1.0, bend=rng.normal(0, 0.4, 7))


def _fundus_shading(
    rng: np.random.Generator,
    noise: np.random.Generator,
    eye: _Eye,
    dark: np.ndarray,
    fov_distance: np.ndarray,
    disc_distance: np.ndarray,
) -> np.ndarray:
    size = fov_distance.shape[0]
    radial = np.clip(fov_distance / eye.fov_radius + 1, 0, 1)
    to_macula = _squared_distance(size, eye.macula)
    # Vignetting, a glow around the disc, and slow uneven illumination.
    light = 1 - rng.uniform(0.35, 0.6) * radial ** rng.uniform(2.0, 3.5)
    glow = np.exp(_squared_distance(size, eye.disc) * (-0.5 / rng.uniform(0.2, 0.3) ** 2))
    light *= (1 + rng.uniform(0.12, 0.3) * glow) * (1 + 0.08 * _low_frequency(rng, size, terms=4, max_freq=4.0))
    red = rng.uniform(0.75, 0.92)
    retina = _colour(red, red * rng.uniform(0.36, 0.48), red * rng.uniform(0.1, 0.2))
    image = retina * (light * (1 + 0.025 * _smooth_noise(noise, size, 0.01)))  # choroidal mottling
    # Macula: darker and browner, with a darker fovea at its centre.
    macula = rng.uniform(0.7, 1.2) * np.exp(to_macula * (-0.5 / rng.uniform(0.11, 0.15) ** 2))
    fovea = np.exp(to_macula * (-0.5 / 0.03**2))
    image *= 1 - _colour(0.2, 0.38, 0.35) * (macula + 0.35 * fovea)
    image = _paint_disc(rng, eye, image, disc_distance)
    # Blood absorbs green and blue more than red: vessels are darker and redder, veins the most.
    artery, vein = dark
    image *= (1 - _colour(0.3, 0.55, 0.5) * artery) * (1 - _colour(0.45, 0.7, 0.65) * vein)
    image = rng.uniform(0.85, 1.12) * image ** rng.uniform(0.85, 1.2)
    image += noise.normal(0, 0.012, image.shape).astype(np.float32)
    return to_uint8(image * _soft_edge(fov_distance, 3 / size))  # black outside the field of view


def _colour(red: float, green: float, blue: float) -> np.ndarray:
    """An RGB triple shaped ``(3, 1, 1)`` to broadcast over a ``(3, H, W)`` image."""
    return np.array([red, green, blue], np.float32)[:, None, None]


def _paint_disc(rng: np.random.Generator, eye: _Eye, image: np.ndarray, disc_distance: np.ndarray) -> np.ndarray:
    """Blend in the yellowish optic disc and its paler cup, the cup slightly off-centre towards the macula."""
    size = disc_distance.shape[0]
    radius = float(eye.disc_radii[0])
    rim = _soft_edge(disc_distance - 1, 3 / (radius * size)) * (1 - 0.25 * np.clip(disc_distance, 0, 1) ** 2)
    towards_macula = (eye.macula - eye.disc) / np.hypot(*(eye.macula - eye.disc))
    cup_radius = rng.uniform(0.3, 0.55) * radius
    cup = np.exp(_squared_distance(size, eye.disc + 0.25 * radius * towards_macula) * (-0.5 / cup_radius**2))
    disc = _colour(1.0, rng.uniform(0.75, 0.88), rng.uniform(0.45, 0.6))
    colour = (disc + (_colour(1.0, 0.97, 0.85) - disc) * cup) * rng.uniform(1.0, 1.2)
    alpha = rng.uniform(0.88, 1.0) * rim
    return image + (colour - image) * alpha
