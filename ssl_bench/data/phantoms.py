"""Deterministic synthetic fundus photographs and chest X-rays with segmentation masks.

These phantoms are the benchmark's built-in data: no download, any size. Anatomy is drawn in normalised
coordinates (x and y in [-1, 1], x to the right, y down), so every size shows the same picture, and image
``i`` of a set depends only on ``(seed, start + i)``: a set can be generated in chunks or in parallel.

Chest X-rays follow the radiological convention: the patient's left (heart, gastric bubble) is on the
image's right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.interpolate import CubicSpline

MIN_SIZE = 32

# Distinct streams so that a fundus and a chest X-ray with the same (seed, index) are unrelated.
_FUNDUS_STREAM = 0
_CXR_STREAM = 1

# Polyline step of the vessel trees, in normalised units (0.64 px at 128 px).
_STEP = 0.01
# No vessel is drawn thinner than this many pixels, so that the thinnest ones stay learnable at 64 px.
_MIN_VESSEL_PX = 1.0

Image = np.ndarray
Masks = dict[str, np.ndarray]
Generator = Callable[[np.random.Generator, int], tuple[Image, Masks]]


@dataclass(frozen=True)
class PhantomSet:
    """Images ``uint8 (N, C, H, W)`` with named binary masks ``bool (N, H, W)``."""

    images: np.ndarray
    masks: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        shape = (self.images.shape[0], *self.images.shape[2:])
        for name, mask in self.masks.items():
            if mask.dtype != np.bool_ or mask.shape != shape:
                raise ValueError(f"mask {name!r} must be bool {shape}, got {mask.dtype} {mask.shape}")

    def __len__(self) -> int:
        return len(self.images)


def make_fundus(n: int, size: int, seed: int, start: int = 0) -> PhantomSet:
    """``n`` RGB fundus photographs ``(n, 3, size, size)`` with masks ``"vessel"`` and ``"disc"``."""
    return _make(_fundus, _FUNDUS_STREAM, n, size, seed, start)


def make_cxr(n: int, size: int, seed: int, start: int = 0) -> PhantomSet:
    """``n`` grey chest X-rays ``(n, 1, size, size)`` with masks ``"lung"`` (heart excluded) and ``"heart"``."""
    return _make(_cxr, _CXR_STREAM, n, size, seed, start)


def save_preview(path: Path, size: int = 128, n: int = 6, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` samples of each family, each image above its mask overlay; return ``path``."""
    # The object-oriented API with an explicit Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fundus, cxr = make_fundus(n, size, seed), make_cxr(n, size, seed)
    rows = [
        ("fundus", _channels_last(fundus.images)),
        ("vessel (green), disc (blue)", _overlay(fundus.images, fundus.masks, ("vessel", "disc"))),
        ("chest X-ray", _channels_last(cxr.images)),
        ("lung (green), heart (red)", _overlay(cxr.images, cxr.masks, ("lung", "heart"))),
    ]
    panel = 2.0
    fig = Figure(figsize=(panel * n, panel * len(rows)), dpi=max(64.0, size / panel))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for (label, images), row_axes in zip(rows, axes, strict=True):
        for image, ax in zip(images, row_axes, strict=True):
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row_axes[0].set_ylabel(label, fontsize=8)
    fig.subplots_adjust(left=0.03, right=0.995, top=0.995, bottom=0.005, wspace=0.02, hspace=0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----------------------------------------------------------------------------------------------------
# Common machinery


def _make(generate: Generator, stream: int, n: int, size: int, seed: int, start: int) -> PhantomSet:
    for name, value in (("n", n), ("seed", seed), ("start", start)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    samples = [generate(np.random.default_rng([seed, start + i, stream]), size) for i in range(n)]
    if not samples:
        probe = generate(np.random.default_rng([0, 0, stream]), MIN_SIZE)
        channels, names = probe[0].shape[0], probe[1].keys()
        empty = np.zeros((0, size, size), bool)
        return PhantomSet(np.zeros((0, channels, size, size), np.uint8), {k: empty for k in names})
    images = np.stack([image for image, _ in samples])
    masks = {name: np.stack([m[name] for _, m in samples]) for name in samples[0][1]}
    return PhantomSet(images, masks)


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates: ``x`` of shape (1, size) and ``y`` of shape (size, 1)."""
    centres = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    x, y = centres[None, :], centres[:, None]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Normalised ``(..., 2)`` xy to pixel ``(..., 2)`` xy, pixel centres at integers."""
    return (points + 1) * (size / 2) - 0.5


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise blurred by ``sigma`` normalised units."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size), np.float32), sigma * size / 2)
    return noise / max(float(noise.std()), 1e-6)


def _low_frequency(rng: np.random.Generator, size: int, terms: int, max_freq: float) -> np.ndarray:
    """A smooth random field (sum of plane waves) of about unit amplitude, identical at every size."""
    x, y = _grid(size)
    field = np.zeros((size, size), np.float32)
    for _ in range(terms):
        fx, fy = rng.uniform(-max_freq, max_freq, 2)
        field += np.cos(fx * x + fy * y + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return field / np.sqrt(terms / 2)


def _soft_edge(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp ``width`` wide (normalised) across a signed distance (<0 inside)."""
    return np.clip(0.5 - signed_distance / width, 0, 1)


def _unit(angle: np.ndarray | float) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], -1)


def _closed_curve(control: np.ndarray, samples: int) -> np.ndarray:
    """A smooth closed curve ``(samples, 2)`` through the control points ``(K, 2)``."""
    closed = np.concatenate([control, control[:1]])
    spline = CubicSpline(np.arange(len(closed)), closed, bc_type="periodic", axis=0)
    return spline(np.linspace(0, len(control), samples, endpoint=False))


def _fill(curve: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the closed normalised curve (even-odd rule)."""
    x0, y0 = _to_pixels(curve, size).T
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    rows = np.arange(size, dtype=np.float64)[:, None]
    # Half-open crossing rule, so that a vertex on a row is counted once.
    crosses = (y0 <= rows) != (y1 <= rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
    row, edge = np.nonzero(crosses)
    # A pixel is inside when an odd number of crossings lie to its left: toggle at each crossing, then scan.
    toggles = np.zeros((size, size + 1), np.int32)
    np.add.at(toggles, (row, np.clip(np.ceil(x[row, edge]), 0, size).astype(np.int64)), 1)
    return (np.cumsum(toggles[:, :size], axis=1) % 2).astype(bool)


# ----------------------------------------------------------------------------------------------------
# Vessel trees: polylines sampled every _STEP, grown as batches of random walks


@dataclass(frozen=True)
class _Vessels:
    """``V`` polylines of ``K`` points: xy ``(V, K, 2)``, diameter and arc length ``(V, K)``, kind ``(V,)``.

    ``valid`` marks the drawn prefix of each polyline; ``kind`` picks the colour (artery 0, vein 1).
    """

    pos: np.ndarray
    width: np.ndarray
    arc: np.ndarray
    valid: np.ndarray
    kind: np.ndarray

    def clipped(self, keep: Callable[[np.ndarray], np.ndarray]) -> _Vessels:
        """Stop each polyline at its first point where ``keep(xy)`` is false."""
        valid = np.logical_and.accumulate(self.valid & keep(self.pos), axis=1)
        return _Vessels(self.pos, self.width, self.arc, valid, self.kind)


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
    """Random walks from ``start`` (V, 2): heading drifts by ``bend`` rad/unit plus Brownian ``wiggle``."""
    count = len(start)
    steps = int(np.ceil(float(length.max(initial=_STEP)) / _STEP)) + 1
    arc = np.broadcast_to(np.arange(steps) * _STEP, (count, steps))
    turns = wiggle * np.sqrt(_STEP) * rng.standard_normal((count, steps))
    turns[:, 0] = 0
    angle = heading[:, None] + np.asarray(bend).reshape(-1, 1) * arc + np.cumsum(turns, axis=1)
    moves = _STEP * _unit(angle)
    pos = start[:, None, :] + np.cumsum(moves, axis=1) - moves
    end_ratio = rng.uniform(0.45, 0.75, count)
    return _Vessels(pos, _taper(width, arc, length, end_ratio), arc, arc <= length[:, None], kind)


def _branch(
    rng: np.random.Generator,
    parents: _Vessels,
    spacing: float,
    min_arc: float,
    width_ratio: tuple[float, float],
    length: tuple[float, float],
    wiggle: float,
) -> _Vessels:
    """Side branches at random points along ``parents`` (mean ``spacing`` apart), narrower and shorter."""
    candidates = parents.valid & (parents.arc > min_arc)
    # Leave room after the branch point so that the parent goes on beyond its child.
    candidates[:, -3:] = False
    vessel, step = np.nonzero(candidates & (rng.random(parents.valid.shape) < _STEP / spacing))
    count = len(vessel)
    direction = parents.pos[vessel, step + 1] - parents.pos[vessel, step - 1]
    heading = np.arctan2(direction[:, 1], direction[:, 0])
    heading += rng.choice([-1.0, 1.0], count) * rng.uniform(0.45, 1.15, count)
    return _walk(
        rng,
        start=parents.pos[vessel, step],
        heading=heading,
        length=rng.uniform(*length, count),
        width=parents.width[vessel, step] * rng.uniform(*width_ratio, count),
        kind=parents.kind[vessel],
        wiggle=wiggle,
        bend=rng.normal(0, 0.8, count),
    )


def _tree(
    rng: np.random.Generator,
    roots: list[_Vessels],
    keep: Callable[[np.ndarray], np.ndarray],
    generations: list[dict],
) -> list[_Vessels]:
    """Roots plus successive generations of branches, each clipped by ``keep``."""
    tree = [v.clipped(keep) for v in roots]
    parents = tree
    for params in generations:
        children = [_branch(rng, p, **params).clipped(keep) for p in parents if p.valid.any()]
        tree += children
        parents = children
    return tree


@lru_cache(maxsize=64)
def _stamp(reach: int) -> np.ndarray:
    """Integer offsets ``(M, 2)`` (dx, dy) within ``reach`` pixels of the origin."""
    dy, dx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    keep = dx**2 + dy**2 <= reach**2
    offsets = np.stack([dx[keep], dy[keep]], -1).astype(np.float32)
    offsets.setflags(write=False)
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
    radii = np.maximum(radii, min_px / 2)
    strength = contrast(2 * radii)
    dark = np.zeros(kinds * size * size, np.float32)
    cover = np.zeros(size * size, np.float32)
    # Coverage of a pixel ~ clip(r + 1/2 - d): reach r + 1/2 from any point up to 1/sqrt(2) off its cell.
    reach = np.ceil(radii + 1.21).astype(int)
    for group in np.unique(reach):
        chosen = reach == group
        p, r = points[chosen], radii[chosen]
        cells = np.rint(p)[:, None, :] + _stamp(int(group))[None]
        coverage = np.clip(r[:, None] + 0.5 - np.sqrt(((cells - p[:, None, :]) ** 2).sum(-1)), 0, 1)
        keep = (coverage > 0) & ((cells >= 0) & (cells < size)).all(-1)
        flat = (cells[..., 1] * size + cells[..., 0]).astype(np.int64)
        np.maximum.at(cover, flat[keep], coverage[keep])
        layer = np.broadcast_to((kind[chosen] * size * size)[:, None], flat.shape)
        np.maximum.at(dark, (flat + layer)[keep], (coverage * strength[chosen][:, None])[keep])
    return dark.reshape(kinds, size, size), cover.reshape(size, size) >= 0.5


def _tube_points(vessels: list[_Vessels], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel xy ``(P, 2)`` along every valid segment at most half a pixel apart, radii (px), kinds."""
    starts, ends, w0, w1, kinds = [], [], [], [], []
    for v in vessels:
        seg = v.valid[:, :-1] & v.valid[:, 1:]
        starts.append(v.pos[:, :-1][seg])
        ends.append(v.pos[:, 1:][seg])
        w0.append(v.width[:, :-1][seg])
        w1.append(v.width[:, 1:][seg])
        kinds.append(np.broadcast_to(v.kind[:, None], seg.shape)[seg])
    p0, p1 = _to_pixels(np.concatenate(starts), size), _to_pixels(np.concatenate(ends), size)
    scale = size / 4  # normalised diameter -> pixel radius
    r0, r1 = np.concatenate(w0) * scale, np.concatenate(w1) * scale
    pieces = max(1, int(np.ceil(np.sqrt(((p1 - p0) ** 2).sum(-1)).max(initial=0) / 0.5)))
    frac = np.arange(pieces, dtype=np.float32) / pieces
    points = p0[:, None] + (p1 - p0)[:, None] * frac[None, :, None]
    radii = r0[:, None] + (r1 - r0)[:, None] * frac[None, :]
    kind = np.repeat(np.concatenate(kinds), pieces)
    return points.reshape(-1, 2).astype(np.float32), radii.reshape(-1).astype(np.float32), kind


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
        side = rng.choice([-1.0, 1.0])  # left or right eye: the disc lies on the nasal side
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


def _fundus(rng: np.random.Generator, size: int) -> tuple[Image, Masks]:
    eye = _Eye.sample(rng)
    vessels = _fundus_vessels(rng, eye)
    dark, inside = _render_tubes(vessels, size, kinds=2, min_px=_MIN_VESSEL_PX, contrast=_vessel_contrast)
    x, y = _grid(size)
    fov_distance = np.sqrt((x - eye.fov_centre[0]) ** 2 + (y - eye.fov_centre[1]) ** 2) - eye.fov_radius
    disc_distance = np.sqrt(
        ((x - eye.disc[0]) / eye.disc_radii[0]) ** 2 + ((y - eye.disc[1]) / eye.disc_radii[1]) ** 2
    )
    image = _fundus_shading(rng, eye, size, dark, fov_distance, disc_distance)
    masks = {"vessel": inside & (fov_distance < 0), "disc": disc_distance <= 1}
    return image, masks


def _vessel_contrast(diameter_px: np.ndarray) -> np.ndarray:
    # Thin vessels are partly transparent: their contrast drops with diameter.
    return np.clip(0.45 + 0.2 * diameter_px, 0.45, 1.0)


def _fundus_vessels(rng: np.random.Generator, eye: _Eye) -> list[_Vessels]:
    roots = [_arcades(rng, eye), _nasal_vessels(rng, eye)]
    generations = [
        {"spacing": 0.35, "min_arc": 1.3 * eye.disc_radii[1], "width_ratio": (0.5, 0.72), "length": (0.25, 0.6)},
        {"spacing": 0.35, "min_arc": 0.04, "width_ratio": (0.55, 0.8), "length": (0.08, 0.25)},
    ]
    for params in generations:
        params["wiggle"] = 1.3
    return _tree(rng, roots, eye.inside, generations)


def _arcades(rng: np.random.Generator, eye: _Eye) -> _Vessels:
    """The four temporal arcade vessels (artery and vein, up and down), curving around the macula."""
    axis = eye.disc - eye.macula
    rho0 = float(np.hypot(*axis))
    along, across = axis / rho0, np.array([-axis[1], axis[0]]) / rho0
    count = 4
    sweep = rng.uniform(2.0, 2.7, (count, 1))
    t = np.linspace(0.0, 2.7, int(np.ceil(2.7 * 1.3 * rho0 / _STEP)))[None, :]
    turn = np.array([1.0, 1.0, -1.0, -1.0])[:, None]
    # Slow irregularities of the arcade's radius, zero at the disc so that every vessel starts there.
    wobble = sum(
        rng.uniform(0.0, 0.05 / j, (count, 1)) * np.sin(j * rng.uniform(1.5, 3.0, (count, 1)) * t)
        for j in (1, 2, 3, 6)
    )
    rho = rho0 * (1 + rng.uniform(0.12, 0.25, (count, 1)) * t + wobble)
    squash = rng.uniform(0.7, 0.95, (count, 1))
    pos = eye.macula + rho[..., None] * (
        np.cos(t)[..., None] * along + (turn * squash * np.sin(t))[..., None] * across
    )
    steps = np.sqrt((np.diff(pos, axis=1) ** 2).sum(-1))
    arc = np.concatenate([np.zeros((count, 1)), np.cumsum(steps, axis=1)], axis=1)
    kind = np.array([0, 1, 0, 1])
    w0 = np.where(kind == 1, rng.uniform(0.027, 0.033, count), rng.uniform(0.021, 0.025, count))
    width = _taper(w0, arc, np.full(count, 2.0), rng.uniform(0.35, 0.5, count))
    return _Vessels(pos, width, arc, t <= sweep, kind)


def _nasal_vessels(rng: np.random.Generator, eye: _Eye) -> _Vessels:
    """Nasal vessels fanning out of the disc away from the macula, plus small temporal ones."""
    outward = float(np.arctan2(*(eye.disc - eye.macula)[::-1]))
    nasal = outward + np.array([1, 1, -1, -1, 0]) * rng.uniform(0.55, 1.25, 5)
    temporal = outward + np.pi + rng.uniform(-0.45, 0.45, 2)
    heading = np.concatenate([nasal, temporal])
    kind = np.array([0, 1, 0, 1, *rng.integers(0, 2, 3)])
    width = np.where(kind == 1, 0.027, 0.022) * rng.uniform(0.85, 1.1, 7)
    width[4:] *= rng.uniform(0.55, 0.75, 3)
    length = np.concatenate([rng.uniform(0.7, 1.0, 5), rng.uniform(0.3, 0.45, 2)])
    start = np.broadcast_to(eye.disc, (7, 2))
    return _walk(rng, start, heading, length, width, kind, wiggle=1.0, bend=rng.normal(0, 0.4, 7))


def _fundus_shading(
    rng: np.random.Generator,
    eye: _Eye,
    size: int,
    dark: np.ndarray,
    fov_distance: np.ndarray,
    disc_distance: np.ndarray,
) -> Image:
    x, y = _grid(size)
    radial = np.clip((fov_distance + eye.fov_radius) / eye.fov_radius, 0, 1)
    to_disc = (x - eye.disc[0]) ** 2 + (y - eye.disc[1]) ** 2
    to_macula = (x - eye.macula[0]) ** 2 + (y - eye.macula[1]) ** 2
    light = (1 - rng.uniform(0.35, 0.6) * radial ** rng.uniform(2.0, 3.5)) * (
        1 + rng.uniform(0.12, 0.3) * np.exp(-to_disc / (2 * rng.uniform(0.2, 0.3) ** 2))
    )
    light *= 1 + 0.08 * _low_frequency(rng, size, terms=4, max_freq=4.0)
    red = rng.uniform(0.75, 0.92)
    retina = np.array([red, red * rng.uniform(0.36, 0.48), red * rng.uniform(0.1, 0.2)], np.float32)
    image = retina[:, None, None] * light * (1 + 0.025 * _smooth_noise(rng, size, 0.01))
    # Macula: darker and browner, with a darker fovea at its centre.
    macula = rng.uniform(0.7, 1.2) * np.exp(-to_macula / (2 * rng.uniform(0.11, 0.15) ** 2))
    fovea = np.exp(-to_macula / (2 * 0.03**2))
    image *= 1 - np.array([0.2, 0.38, 0.35], np.float32)[:, None, None] * (macula + 0.35 * fovea)
    image = _paint_disc(rng, eye, image, disc_distance, size)
    artery, vein = dark
    image *= 1 - np.array([0.3, 0.55, 0.5], np.float32)[:, None, None] * artery
    image *= 1 - np.array([0.45, 0.7, 0.65], np.float32)[:, None, None] * vein
    image = rng.uniform(0.85, 1.12) * image ** rng.uniform(0.85, 1.2)
    image *= _soft_edge(fov_distance, 3 / size)
    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    return _to_uint8(image)


def _paint_disc(
    rng: np.random.Generator, eye: _Eye, image: np.ndarray, disc_distance: np.ndarray, size: int
) -> np.ndarray:
    """Blend in the yellowish optic disc with its paler cup, slightly off-centre towards the macula."""
    x, y = _grid(size)
    edge_px = 1.5 / (eye.disc_radii[0] * size / 2)
    rim = _soft_edge(disc_distance - 1, edge_px) * (1 - 0.25 * np.clip(disc_distance, 0, 1) ** 2)
    cup_centre = eye.disc + 0.25 * eye.disc_radii[0] * (eye.macula - eye.disc) / np.hypot(*(eye.macula - eye.disc))
    cup_radius = rng.uniform(0.3, 0.55) * eye.disc_radii[0]
    cup = np.exp(-((x - cup_centre[0]) ** 2 + (y - cup_centre[1]) ** 2) / (2 * cup_radius**2))
    disc = np.array([1.0, rng.uniform(0.75, 0.88), rng.uniform(0.45, 0.6)], np.float32)[:, None, None]
    pale = np.array([1.0, 0.97, 0.85], np.float32)[:, None, None]
    colour = (disc * (1 - cup) + pale * cup) * rng.uniform(1.0, 1.2)
    alpha = rng.uniform(0.88, 1.0) * rim
    return image * (1 - alpha) + colour * alpha


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Chest X-rays


# Right lung (image left) in the patient frame, clockwise from the apex; the left lung mirrors it.
_LUNG_OUTLINE = np.array(
    [
        (-0.40, -0.80), (-0.30, -0.78), (-0.23, -0.66), (-0.19, -0.45), (-0.18, -0.20), (-0.19, 0.05),
        (-0.21, 0.27), (-0.26, 0.44), (-0.38, 0.42), (-0.52, 0.44), (-0.66, 0.52), (-0.79, 0.64),
        (-0.84, 0.42), (-0.84, 0.12), (-0.79, -0.24), (-0.69, -0.55), (-0.55, -0.75),
    ]
)  # fmt: skip
# The aortic knob pushes the left lung's upper medial border outwards (vertex index -> shift in u).
_AORTIC_KNOB = {3: 0.06, 4: 0.02}
_APEX_LEVEL = -0.8
_BASE_LEVEL = 0.44  # medial end of the diaphragm, where the heart rests


@dataclass(frozen=True)
class _Pose:
    """Where the patient stands: image xy = centre + scale * rotation(angle) @ patient uv."""

    centre: np.ndarray
    scale: float
    angle: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> _Pose:
        return cls(rng.uniform([-0.04, -0.02], [0.04, 0.06]), rng.uniform(0.86, 0.98), rng.uniform(-0.06, 0.06))

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return self.centre + self.scale * (uv @ np.array([[c, s], [-s, c]]))

    def patient_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Patient-frame ``u`` and ``v`` of every pixel, ``(size, size)`` each."""
        x, y = _grid(size)
        dx, dy = x - np.float32(self.centre[0]), y - np.float32(self.centre[1])
        c, s = np.float32(np.cos(self.angle) / self.scale), np.float32(np.sin(self.angle) / self.scale)
        return dx * c + dy * s, dy * c - dx * s


def _cxr(rng: np.random.Generator, size: int) -> tuple[Image, Masks]:
    pose = _Pose.sample(rng)
    u, v = pose.patient_grid(size)
    lungs, heart, base = _chest_outlines(rng, pose, size)
    lung_soft = _blur(lungs.astype(np.float32), 0.012, size)
    heart_soft = _blur(heart.astype(np.float32), 0.015, size)
    # A lung is thinner near its edges and holds less air there: a wide blur stands in for thickness.
    thickness = _blur(lungs.astype(np.float32), 0.08, size)
    air = lung_soft * (0.4 + 0.6 * thickness) * (1 - 0.92 * heart_soft)
    density = (
        _soft_tissue(rng, u, v, base)
        + _mediastinum(rng, u, v)
        + _clavicles(rng, u, v)
        + _ribs(rng, u, v, base) * (0.3 + 0.7 * lung_soft)
        + 0.09 * _lung_markings(rng, pose, lungs, size) * lung_soft
        + 0.08 * heart_soft
        - rng.uniform(0.34, 0.44) * air
        - _gastric_bubble(rng, u, v, base)
    )
    image = _radiograph(rng, density, size)
    return image[None], {"lung": lungs & ~heart, "heart": heart}


def _blur(image: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Gaussian blur by ``sigma`` normalised units (the same look at every size)."""
    return ndimage.gaussian_filter(image, sigma * size / 2, mode="nearest", truncate=3.0)


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
        lungs |= _fill(pose.to_image(_closed_curve(outline, 96)), size)
    base = _APEX_LEVEL + (_BASE_LEVEL - _APEX_LEVEL) * depth
    return lungs, _fill(pose.to_image(_heart_outline(rng, base)), size), base


def _heart_outline(rng: np.random.Generator, base: float) -> np.ndarray:
    """A tilted ellipse, apex down towards the patient's left, flattened where it rests on the diaphragm."""
    along, across = rng.uniform(0.34, 0.42), rng.uniform(0.24, 0.29)
    tilt = rng.uniform(0.35, 0.65)
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    ellipse = _unit(t) * [along, across] * (1 + rng.normal(0, 0.025, (12, 1)))
    c, s = np.cos(tilt), np.sin(tilt)
    centre = np.array([rng.uniform(0.08, 0.15), base - rng.uniform(0.18, 0.24)])
    curve = _closed_curve(centre + ellipse @ np.array([[c, s], [-s, c]]), 96)
    curve[:, 1] = np.minimum(curve[:, 1], base + 0.03)
    return curve


def _soft_tissue(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: float) -> np.ndarray:
    """Chest wall, shoulders, neck and abdomen: thicker (brighter) towards the midline, air around."""
    half_width = rng.uniform(0.95, 1.04) * (1 - 0.05 * (v - 0.2) ** 2)
    neck = rng.uniform(0.26, 0.32)
    au = np.abs(u)
    shoulder = np.clip((au - neck) / (half_width - neck), 0, 1)
    # Trapezius slope from the neck out to the shoulder, curving up into the neck without a corner.
    top = -0.97 + 0.2 * shoulder**2 - 1.2 * np.clip((neck + 0.15 - au) / 0.2, 0, 1) ** 2
    inside = np.minimum(half_width - au, v - top)
    # Tissue thins to nothing at the skin, so the body edge is a ramp rather than a step.
    body = np.sqrt(np.clip(inside / 0.12, 0, 1))
    depth = np.sqrt(np.clip(1 - (u / half_width) ** 2, 0, 1))
    abdomen = 0.07 * np.clip((v - base + 0.05) / 0.3, 0, 1)
    humeri = sum(_soft_edge(np.hypot(u - side * half_width, v + 0.76) - 0.14, 0.04) for side in (-1, 1))
    return body * (rng.uniform(0.14, 0.2) + 0.46 * depth + abdomen + 0.14 * humeri)


def _mediastinum(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Spine with faint vertebral bodies, and the dark tracheal air column down to the carina."""
    period = rng.uniform(0.085, 0.1)
    vertebrae = 0.85 + 0.15 * np.cos(2 * np.pi * (v / period + rng.uniform()))
    spine = 0.06 * _soft_edge(np.abs(u) - 0.07, 0.03) * vertebrae
    carina = rng.uniform(-0.36, -0.28)
    trachea = _soft_edge(np.abs(u) - 0.045, 0.03) * _soft_edge(v - carina, 0.06)
    return spine - 0.08 * trachea


def _clavicles(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Two oblique S-curved bands from the sternal notch up and out to the shoulders."""
    medial, lateral = rng.uniform(-0.66, -0.58), rng.uniform(-0.86, -0.78)
    q = (np.abs(u) - 0.08) / 0.66
    centre = medial + (lateral - medial) * q + 0.025 * np.sin(2 * np.pi * q)
    slope = (lateral - medial) / 0.66
    half = 0.032 * (1.2 - 0.4 * np.clip(q, 0, 1))
    distance = np.abs(v - centre) / np.sqrt(1 + slope**2)
    ends = np.clip(q * 12, 0, 1) * np.clip((1.1 - q) * 12, 0, 1)
    return rng.uniform(0.12, 0.16) * _soft_edge(distance - half, 0.025) * ends


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
    return rng.uniform(0.045, 0.07) * (posterior + 0.5 * anterior) * chest


def _bands(phase: np.ndarray, duty: float) -> np.ndarray:
    """Periodic bands ``duty`` of each period wide, brighter at their (cortical) edges."""
    f = 2 * (phase % 1) / duty - 1  # -1..1 across a band, > 1 between bands
    return np.where(f < 1, 0.7 + 0.3 * f**4, 0)


def _lung_markings(rng: np.random.Generator, pose: _Pose, lungs: np.ndarray, size: int) -> np.ndarray:
    """Pulmonary vessels branching out of both hila: faint bright lines, dense centrally."""
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
        {"spacing": 0.12, "min_arc": 0.04, "width_ratio": (0.55, 0.8), "length": (0.1, 0.3), "wiggle": 1.5},
        {"spacing": 0.15, "min_arc": 0.03, "width_ratio": (0.6, 0.85), "length": (0.05, 0.15), "wiggle": 1.5},
    ]

    def in_lung(xy: np.ndarray) -> np.ndarray:
        cols, rows = np.clip(np.rint(_to_pixels(xy, size)), 0, size - 1).astype(np.int64).T
        return lungs[rows.T, cols.T]

    tree = _tree(rng, [roots], in_lung, generations)
    marks, _ = _render_tubes(tree, size, kinds=1, min_px=0.0, contrast=np.ones_like)
    return _blur(marks[0], 0.006, size)


def _gastric_bubble(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, base: float) -> np.ndarray:
    """Air in the stomach under the left hemidiaphragm, in most films."""
    centre, radii = rng.uniform([0.35, 0.15], [0.5, 0.22]), rng.uniform([0.07, 0.04], [0.11, 0.06])
    strength = rng.uniform(0.06, 0.12) * (rng.random() < 0.7)
    shape = np.hypot((u - centre[0]) / radii[0], (v - base - centre[1]) / radii[1])
    return strength * _soft_edge(shape - 1, 0.5)


def _radiograph(rng: np.random.Generator, density: np.ndarray, size: int) -> Image:
    """Detector response: slight blur, random window and gamma, quantum noise."""
    image = _blur(density.astype(np.float32), 0.005, size)
    image = np.clip(rng.uniform(1.05, 1.3) * image + rng.uniform(-0.05, 0.03), 0, 1) ** rng.uniform(0.8, 1.2)
    image += rng.normal(0, 0.012, image.shape).astype(np.float32)
    image += 0.012 * _smooth_noise(rng, size, 0.006)
    return _to_uint8(image)


# ----------------------------------------------------------------------------------------------------
# Preview


def _channels_last(images: np.ndarray) -> np.ndarray:
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


_OVERLAY_COLOURS = ((0.1, 1.0, 0.2), (0.2, 0.4, 1.0), (1.0, 0.2, 0.2))


def _overlay(images: np.ndarray, masks: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Images (N, H, W, 3) with each named mask tinted in its own colour."""
    base = images.transpose(0, 2, 3, 1).astype(np.float32) / 255
    if base.shape[-1] == 1:
        base = np.repeat(base, 3, axis=-1)
    for name, colour in zip(names, ((0.1, 1.0, 0.2), (0.2, 0.4, 1.0) if "disc" in names else (1.0, 0.2, 0.2))):
        tint = masks[name][..., None] * 0.55
        base = base * (1 - tint) + np.array(colour, np.float32) * tint
    return _to_uint8(base)
