"""The phantoms' preview (``ssl-bench data preview``): a PNG grid of samples of each family, each row of
images above its mask overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssl_bench.data.phantoms import PhantomSet, make_cxr, make_fundus
from ssl_bench.data.phantoms.drawing import to_uint8

_GREEN, _BLUE, _RED = (0.1, 1.0, 0.2), (0.2, 0.45, 1.0), (1.0, 0.2, 0.2)


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


def _rgb(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` to ``(N, H, W, 3)``, grey repeated into three channels."""
    return np.repeat(images, 3 // images.shape[1], axis=1).transpose(0, 2, 3, 1)


def _overlay(phantoms: PhantomSet, colours: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """The images ``(N, H, W, 3)`` with each named mask tinted in its colour."""
    image = _rgb(phantoms.images).astype(np.float32) / 255
    for name, colour in colours.items():
        alpha = 0.55 * phantoms.masks[name][..., None]
        image += (np.array(colour, np.float32) - image) * alpha
    return to_uint8(image)
