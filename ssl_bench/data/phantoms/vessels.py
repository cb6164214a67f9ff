"""Vessel trees: polylines sampled every ``_STEP``, grown as batches of random walks; and their rendering
as tubes (unions of discs) into darkness maps and masks. Shared by the fundus, angiogram and chest X-ray
phantoms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ssl_bench.data.phantoms.drawing import _to_pixels, _unit

# Polyline step of the vessel trees, in normalised units (0.64 px at 128 px).
_STEP = 0.01
# No fundus vessel is drawn thinner than this many pixels, so that the thinnest stay learnable.
_MIN_VESSEL_PX = 1.0


@dataclass(frozen=True)
class _Vessels:
    """``V`` polylines of ``K`` points: xy ``(V, K, 2)``, diameter and arc length ``(V, K)``, kind ``(V,)``.

    ``valid`` marks the drawn prefix of each polyline; ``kind`` picks the colour (fundus: artery 0, vein 1).
    A branch records where it leaves its parent: the parent's index in its batch and the step along it
    (``parent_step``); for roots both are None.
    """

    pos: np.ndarray
    width: np.ndarray
    arc: np.ndarray
    valid: np.ndarray
    kind: np.ndarray
    parent: np.ndarray | None = None
    parent_step: np.ndarray | None = None

    def clipped(self, keep: Callable[[np.ndarray], np.ndarray]) -> _Vessels:
        """Stop each polyline at its first point where ``keep(xy)`` is false."""
        valid = np.logical_and.accumulate(self.valid & keep(self.pos), axis=1)
        return dataclasses.replace(self, valid=valid)


@dataclass(frozen=True)
class _Branching:
    """How one generation of side branches grows out of its parents (lengths normalised)."""

    spacing: float  # mean distance between branch points along a parent
    min_arc: float  # no branch this close to the parent's start (must be > 0)
    width_ratio: tuple[float, float]  # child diameter / parent diameter at the branch point
    length: tuple[float, float]
    wiggle: float


def _taper(w0: np.ndarray, arc: np.ndarray, length: np.ndarray, end_ratio: np.ndarray) -> np.ndarray:
    """Diameters shrinking linearly from ``w0`` to ``w0 * end_ratio`` over ``length``."""
    frac = np.clip(arc / length[:, None], 0, 1)
    return w0[:, None] * (1 - (1 - end_ratio[:, None]) * frac)


def _walk(
    rng: np.random.Generator,
    start: np.ndarray,
    heading: np.ndarray,
    length: np.ndarray,
    width: np.ndarray,
    kind: np.ndarray,
    wiggle: float,
    bend: np.ndarray | float = 0.0,
) -> _Vessels:
    """Random walks from ``start`` (V, 2): heading turns ``bend`` rad per unit plus Brownian ``wiggle``."""
    count = len(start)
    steps = int(np.ceil(float(length.max(initial=_STEP)) / _STEP)) + 1
    arc = np.broadcast_to(np.arange(steps) * _STEP, (count, steps))
    turns = wiggle * np.sqrt(_STEP) * rng.standard_normal((count, steps))
    turns[:, 0] = 0
    angle = heading[:, None] + np.reshape(bend, (-1, 1)) * arc + np.cumsum(turns, axis=1)
    moves = _STEP * _unit(angle)
    pos = start[:, None, :] + np.cumsum(moves, axis=1) - moves
    width = _taper(width, arc, length, rng.uniform(0.45, 0.75, count))
    return _Vessels(pos, width, arc, arc <= length[:, None], kind)


def _branch(rng: np.random.Generator, parents: _Vessels, rule: _Branching) -> _Vessels:
    """Side branches at random points along ``parents``, narrower and shorter, leaving at 25-65 degrees."""
    candidates = parents.valid & (parents.arc > rule.min_arc)
    candidates[:, -3:] = False  # the parent must go on beyond its child
    vessel, step = np.nonzero(candidates & (rng.random(parents.valid.shape) < _STEP / rule.spacing))
    count = len(vessel)
    direction = parents.pos[vessel, step + 1] - parents.pos[vessel, step - 1]
    heading = np.arctan2(direction[:, 1], direction[:, 0])
    heading += rng.choice([-1.0, 1.0], count) * rng.uniform(0.45, 1.15, count)
    branches = _walk(
        rng,
        start=parents.pos[vessel, step],
        heading=heading,
        length=rng.uniform(*rule.length, count),
        width=parents.width[vessel, step] * rng.uniform(*rule.width_ratio, count),
        kind=parents.kind[vessel],
        wiggle=rule.wiggle,
        bend=rng.normal(0, 0.8, count),
    )
    return dataclasses.replace(branches, parent=vessel, parent_step=step)


def _tree(
    rng: np.random.Generator,
    roots: list[_Vessels],
    keep: Callable[[np.ndarray], np.ndarray],
    generations: list[_Branching],
) -> list[_Vessels]:
    """Roots plus successive generations of branches, all clipped by ``keep``."""
    tree = [v.clipped(keep) for v in roots]
    parents = tree
    for rule in generations:
        parents = [_branch(rng, p, rule).clipped(keep) for p in parents if p.valid.any()]
        tree += parents
    return tree


@lru_cache(maxsize=64)
def _stamp(reach: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer offsets ``dx, dy`` (each ``(M,)``) within ``reach`` pixels of the origin."""
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1].astype(np.float32)
    keep = dx**2 + dy**2 <= reach**2
    offsets = dx[keep], dy[keep]
    for o in offsets:
        o.setflags(write=False)
    return offsets


def _render_tubes(
    vessels: list[_Vessels],
    size: int,
    kinds: int,
    min_px: float,
    contrast: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the polylines as unions of discs.

    Returns per-kind darkness ``(kinds, size, size)``: ``contrast`` of the diameter in pixels times an
    anti-aliased coverage, maximised over the discs; and the mask of pixel centres inside any disc.
    """
    points, radii, kind = _tube_points(vessels, size)
    radii = np.maximum(radii, np.float32(min_px / 2))
    strength = contrast(2 * radii)
    dark = np.zeros(kinds * size * size, np.float32)
    inside = np.zeros(size * size, bool)
    # Coverage of a pixel ~ clip(r + 1/2 - d); a point lies up to 1/sqrt(2) from its nearest pixel centre.
    reach = np.ceil(radii + 1.21).astype(int)
    for group in np.unique(reach):
        chosen = np.flatnonzero(reach == group)
        x, y, r = points[chosen, 0, None], points[chosen, 1, None], radii[chosen, None]
        ox, oy = _stamp(int(group))
        cx, cy = np.rint(x) + ox, np.rint(y) + oy
        distance = np.sqrt((cx - x) ** 2 + (cy - y) ** 2)
        coverage = np.clip(r + 0.5 - distance, 0, 1)
        keep = (coverage > 0) & (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
        flat = (cy[keep] * size + cx[keep]).astype(np.int64)
        inside[flat[(distance <= r)[keep]]] = True
        layer = np.broadcast_to(kind[chosen, None] * (size * size), keep.shape)[keep]
        np.maximum.at(dark, flat + layer, (coverage * strength[chosen, None])[keep])
    return dark.reshape(kinds, size, size), inside.reshape(size, size)


def _tube_points(vessels: list[_Vessels], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel xy ``(P, 2)`` along every valid segment, at most half a pixel apart; radii (px); kinds."""
    parts: list[tuple[np.ndarray, ...]] = []
    for v in vessels:
        seg = v.valid[:, :-1] & v.valid[:, 1:]
        kind = np.broadcast_to(v.kind[:, None], seg.shape)
        parts.append((v.pos[:, :-1][seg], v.pos[:, 1:][seg], v.width[:, :-1][seg], v.width[:, 1:][seg], kind[seg]))
    p0, p1, w0, w1, kinds = (np.concatenate(column) for column in zip(*parts, strict=True))
    p0, p1 = _to_pixels(p0, size), _to_pixels(p1, size)
    r0, r1 = w0 * (size / 4), w1 * (size / 4)  # normalised diameter -> pixel radius
    longest = float(np.sqrt(((p1 - p0) ** 2).sum(-1)).max(initial=0))
    pieces = max(1, int(np.ceil(longest / 0.5)))
    frac = np.arange(pieces) / pieces
    points = p0[:, None] + (p1 - p0)[:, None] * frac[None, :, None]
    radii = r0[:, None] + (r1 - r0)[:, None] * frac[None, :]
    return points.reshape(-1, 2).astype(np.float32), radii.reshape(-1).astype(np.float32), kinds.repeat(pieces)
