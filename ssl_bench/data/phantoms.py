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
from skimage.draw import polygon as fill_polygon

MIN_SIZE = 32

# Distinct streams so that a fundus and a chest X-ray with the same (seed, index) are unrelated.
_FUNDUS_STREAM = 0
_CXR_STREAM = 1

# Polyline step of the vessel trees, in normalised units (0.64 px at 128 px).
_STEP = 0.01
# No vessel is drawn thinner than this many pixels, so that the thinnest ones stay learnable at 64 px.
_MIN_VESSEL_PX = 1.15

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
    """Boolean mask of the pixels whose centres lie inside the closed normalised curve."""
    cols, rows = _to_pixels(curve, size).T
    mask = np.zeros((size, size), bool)
    rr, cc = fill_polygon(rows, cols, (size, size))
    mask[rr, cc] = True
    return mask


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
        {"spacing": 0.3, "min_arc": 1.3 * eye.disc_radii[1], "width_ratio": (0.5, 0.72), "length": (0.25, 0.6)},
        {"spacing": 0.25, "min_arc": 0.04, "width_ratio": (0.55, 0.8), "length": (0.12, 0.35)},
        {"spacing": 0.25, "min_arc": 0.03, "width_ratio": (0.6, 0.85), "length": (0.06, 0.18)},
    ]
    for params in generations:
        params["wiggle"] = 1.6
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
        for j in (1, 2, 3)
    )
    rho = rho0 * (1 + rng.uniform(0.12, 0.25, (count, 1)) * t + wobble)
    squash = rng.uniform(0.7, 0.95, (count, 1))
    pos = eye.macula + rho[..., None] * (
        np.cos(t)[..., None] * along + (turn * squash * np.sin(t))[..., None] * across
    )
    steps = np.sqrt((np.diff(pos, axis=1) ** 2).sum(-1))
    arc = np.concatenate([np.zeros((count, 1)), np.cumsum(steps, axis=1)], axis=1)
    kind = np.array([0, 1, 0, 1])
    w0 = np.where(kind == 1, rng.uniform(0.034, 0.04, count), rng.uniform(0.028, 0.033, count))
    width = _taper(w0, arc, np.full(count, 2.0), rng.uniform(0.35, 0.5, count))
    return _Vessels(pos, width, arc, t <= sweep, kind)


def _nasal_vessels(rng: np.random.Generator, eye: _Eye) -> _Vessels:
    """Nasal vessels fanning out of the disc away from the macula, plus small temporal ones."""
    outward = float(np.arctan2(*(eye.disc - eye.macula)[::-1]))
    nasal = outward + np.array([1, 1, -1, -1, 0]) * rng.uniform(0.55, 1.25, 5)
    temporal = outward + np.pi + rng.uniform(-0.45, 0.45, 2)
    heading = np.concatenate([nasal, temporal])
    kind = np.array([0, 1, 0, 1, *rng.integers(0, 2, 3)])
    width = np.where(kind == 1, 0.03, 0.025) * rng.uniform(0.85, 1.1, 7)
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
    image = retina[:, None, None] * light * (1 + 0.035 * _smooth_noise(rng, size, 0.012))
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
    disc = np.array([1.0, rng.uniform(0.72, 0.86), rng.uniform(0.4, 0.55)], np.float32)[:, None, None]
    pale = np.array([1.0, 0.95, 0.78], np.float32)[:, None, None]
    colour = disc * (1 - cup) + pale * cup
    alpha = rng.uniform(0.8, 0.95) * rim
    return image * (1 - alpha) + colour * alpha * rng.uniform(0.9, 1.05)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------
# Chest X-rays


def _cxr(rng: np.random.Generator, size: int) -> tuple[Image, Masks]:
    raise NotImplementedError


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
