"""Deterministic synthetic fundus photographs, chest X-rays and angiograms with segmentation masks.

These phantoms are the benchmark's built-in data: no download, any size. Anatomy is drawn in normalised
coordinates (x and y in [-1, 1], x to the right, y down), so every size shows the same picture, and image
``i`` of a set depends only on ``(seed, start + i)``: a set can be generated in chunks or in parallel.

Chest X-rays follow the radiological convention: the patient's left (heart apex, aortic knob, gastric
bubble) is on the image's right.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Smallest supported image side in pixels.
MIN_SIZE = 32

# Polyline step of the vessel trees, in normalised units (0.64 px at 128 px).
_STEP = 0.01
# No fundus vessel is drawn thinner than this many pixels, so that the thinnest stay learnable.
_MIN_VESSEL_PX = 1.0
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


def make_fundus(n: int, size: int, seed: int, start: int = 0) -> PhantomSet:
    """``n`` RGB fundus photographs ``(n, 3, size, size)`` with masks ``"vessel"`` and ``"disc"`` and the
    landmarks :data:`FUNDUS_LANDMARKS`, exactly where the generator put them."""
    family = _Family(stream=0, channels=3, masks=("vessel", "disc"), landmarks=FUNDUS_LANDMARKS)
    return _make(_fundus, family, n, size, seed, start)


def make_cxr(n: int, size: int, seed: int, start: int = 0) -> PhantomSet:
    """``n`` grey chest X-rays ``(n, 1, size, size)`` with masks ``"lung"`` (heart excluded) and ``"heart"``."""
    return _make(_cxr, _Family(stream=1, channels=1, masks=("lung", "heart")), n, size, seed, start)


def make_angiogram(n: int, size: int, seed: int, start: int = 0) -> PhantomSet:
    """``n`` grey en-face angiograms ``(n, 1, size, size)`` (OCTA-like: bright vessels on a dark speckled
    background) with mask ``"vessel"``: trees that enter from the border and branch over three generations,
    with no field of view, disc or macula. A vessel family of its own, the fundus phantoms' shape prior."""
    return _make(_angiogram, _Family(stream=2, channels=1, masks=("vessel",)), n, size, seed, start)


def save_preview(path: Path, size: int = 128, n: int = 6, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` samples of each family, each row of images above its mask overlays."""
    # The object-oriented API with an explicit Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fundus, cxr = make_fundus(n, size, seed), make_cxr(n, size, seed)
    rows = [
        ("fundus", _rgb(fundus.images)),
        ("vessel (green), disc (blue)", _overlay(fundus, {"vessel": _GREEN, "disc": _BLUE})),
        ("chest X-ray", _rgb(cxr.images)),
        ("lung (green), heart (red)", _overlay(cxr, {"lung": _GREEN, "heart": _RED})),
    ]
    panel = 2.0  # inches per image; the dpi shows each image at about its own resolution
    fig = Figure(figsize=(panel * n, panel * len(rows)), dpi=max(64.0, size / panel))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for (label, images), row in zip(rows, axes, strict=True):
        for image, ax in zip(images, row, strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(label, fontsize=7)
    fig.subplots_adjust(left=0.03, right=0.995, top=0.995, bottom=0.005, wspace=0.02, hspace=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Vessel trees: polylines sampled every _STEP, grown as batches of random walks


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


# ----------------------------------------------------------------------------------------------------
# Fundus photographs


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
    return _to_uint8(image * _soft_edge(fov_distance, 3 / size))  # black outside the field of view


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


# ----------------------------------------------------------------------------------------------------
# Angiograms: vessel trees entering from the border, denser and more branched than the fundus phantoms'

_ANGIOGRAM_GENERATIONS = (
    _Branching(spacing=0.25, min_arc=0.1, width_ratio=(0.6, 0.85), length=(0.3, 0.7), wiggle=1.6),
    _Branching(spacing=0.25, min_arc=0.04, width_ratio=(0.6, 0.85), length=(0.15, 0.4), wiggle=1.6),
    _Branching(spacing=0.3, min_arc=0.03, width_ratio=(0.6, 0.85), length=(0.08, 0.2), wiggle=1.6),
)


def _angiogram(rng: np.random.Generator, noise: np.random.Generator, size: int) -> _Sample:
    roots = int(rng.integers(2, 4))
    # Each root enters at a random point of a random side, heading roughly towards the centre.
    side = rng.integers(0, 4, roots)
    along = rng.uniform(-0.8, 0.8, roots)
    start = np.stack([np.choose(side, [along, along, -0.99, 0.99]), np.choose(side, [-0.99, 0.99, along, along])], -1)
    heading = np.arctan2(-start[:, 1], -start[:, 0]) + rng.uniform(-0.5, 0.5, roots)
    trunks = _walk(
        rng, start, heading, rng.uniform(1.2, 2.0, roots), rng.uniform(0.02, 0.03, roots), np.zeros(roots, int), 1.2
    )
    vessels = _tree(rng, [trunks], lambda xy: (np.abs(xy) < 1).all(-1), list(_ANGIOGRAM_GENERATIONS))
    dark, inside = _render_tubes(vessels, size, kinds=1, min_px=_MIN_VESSEL_PX, contrast=np.ones_like)
    background = rng.uniform(0.08, 0.18) * (1 + 0.3 * _low_frequency(rng, size, terms=3, max_freq=3.0))
    image = background + rng.uniform(0.55, 0.8) * dark[0]
    image *= 1 + 0.25 * noise.standard_normal(image.shape).astype(np.float32)  # speckle
    return _to_uint8(image)[None], {"vessel": inside}, {}


# ----------------------------------------------------------------------------------------------------
# Chest X-rays: a density (attenuation) map in the patient's frame, then the detector's response

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
    return _to_uint8(image)


# ----------------------------------------------------------------------------------------------------
# Preview

_GREEN, _BLUE, _RED = (0.1, 1.0, 0.2), (0.2, 0.45, 1.0), (1.0, 0.2, 0.2)


def _rgb(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` to ``(N, H, W, 3)``, grey repeated into three channels."""
    return np.repeat(images, 3 // images.shape[1], axis=1).transpose(0, 2, 3, 1)


def _overlay(phantoms: PhantomSet, colours: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """The images ``(N, H, W, 3)`` with each named mask tinted in its colour."""
    image = _rgb(phantoms.images).astype(np.float32) / 255
    for name, colour in colours.items():
        alpha = 0.55 * phantoms.masks[name][..., None]
        image += (np.array(colour, np.float32) - image) * alpha
    return _to_uint8(image)
