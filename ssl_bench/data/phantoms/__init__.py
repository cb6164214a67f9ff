"""Deterministic synthetic fundus photographs, chest X-rays and angiograms with segmentation masks.

These phantoms are the benchmark's built-in data: no download, any size. Anatomy is drawn in normalised
coordinates (x and y in [-1, 1], x to the right, y down), so every size shows the same picture, and image
``i`` of a set depends only on ``(seed, start + i)``: a set can be generated in chunks or in parallel.

Chest X-rays follow the radiological convention: the patient's left (heart apex, aortic knob, gastric
bubble) is on the image's right.

The package is the public API below; one module per part of the generator:

- ``core``: :class:`PhantomSet`, ``MIN_SIZE``, and the machinery that draws a set image by image from
  per-image random streams (``_Family``, ``_make``).
- ``drawing``: shared drawing helpers: the normalised grid, blurs and noise, soft edges, curves and their
  filling, ``uint8`` conversion.
- ``vessels``: vessel trees grown as batches of random walks, and their rendering as tubes.
- ``fundus``: the fundus photograph phantom and :data:`FUNDUS_LANDMARKS`.
- ``angiogram``: the angiogram phantom.
- ``cxr``: the chest X-ray phantom.

The preview grid (``ssl-bench data preview``) is drawn by :mod:`ssl_bench.preview`.
"""

from __future__ import annotations

from ssl_bench.data.phantoms.angiogram import _angiogram
from ssl_bench.data.phantoms.core import MIN_SIZE, PhantomSet, _Family, _make
from ssl_bench.data.phantoms.cxr import _cxr
from ssl_bench.data.phantoms.fundus import FUNDUS_LANDMARKS, _fundus

__all__ = ["FUNDUS_LANDMARKS", "MIN_SIZE", "PhantomSet", "make_angiogram", "make_cxr", "make_fundus"]


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
