"""Angiograms: vessel trees entering from the border, denser and more branched than the fundus phantoms'."""

from __future__ import annotations

import numpy as np

from ssl_bench.data.phantoms.core import _Sample
from ssl_bench.data.phantoms.drawing import _low_frequency, to_uint8
from ssl_bench.data.phantoms.vessels import _MIN_VESSEL_PX, _Branching, _render_tubes, _tree, _walk

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
    return to_uint8(image)[None], {"vessel": inside}, {}
