"""``ssl-bench data preview``: a PNG grid of the built-in phantoms (each row of images above its mask overlays),
or of any task as the harness reads it: training and test images, their masks (and landmarks) or labels, each
titled with its split and id."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ssl_bench.data.phantoms import PhantomSet, make_cxr, make_fundus
from ssl_bench.data.phantoms.drawing import to_uint8
from ssl_bench.task import ClassificationData, SegmentationData, SegmentationSplit

_GREEN, _BLUE, _RED = (0.1, 1.0, 0.2), (0.2, 0.45, 1.0), (1.0, 0.2, 0.2)


def save_preview(path: Path, size: int = 128, n: int = 6, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` samples of each family, each row of images above its mask overlays."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    fundus, cxr = make_fundus(n, size, seed), make_cxr(n, size, seed)
    rows = [
        ("fundus", _rgb(fundus.images), None),
        ("vessel (green), disc (blue)", _overlay(fundus, {"vessel": _GREEN, "disc": _BLUE}), None),
        ("chest X-ray", _rgb(cxr.images), None),
        ("lung (green), heart (red)", _overlay(cxr, {"lung": _GREEN, "heart": _RED}), None),
    ]
    return _draw(Path(path), rows, size)


#: A row of the grid: its label, images (N, H, W, 3) uint8 and a title per image (or None).
Row = tuple[str, np.ndarray, list[str] | None]


def save_task_preview(
    path: Path, data: SegmentationData | ClassificationData, n: int = 6, group_of: Callable[[str], str] = str
) -> Path:
    """Write a PNG grid of the first ``n`` training and test images of a task's data as read: for segmentation
    each row of images above its masks (landmarks as red dots), for classification the images titled with their
    labels; every image titled with its split and id, and its group (``group_of``: the task's
    :meth:`~ssl_bench.task.Task.image_group`) where that is not the image alone."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rows: list[Row] = []
    for name, split in (("train", data.train), ("test", data.test)):
        count = min(n, len(split))
        images = _rgb(split.images[:count].numpy())
        groups = [group_of(image_id) for image_id in split.ids[:count]]
        titles = [
            f"{name} {image_id}" + ("" if group == image_id else f" [{group}]")
            for image_id, group in zip(split.ids[:count], groups, strict=True)
        ]
        if isinstance(split, SegmentationSplit):
            rows += [(name, images, titles), (f"{name} masks", _masked(images, split, count), None)]
        else:
            labels = [" ".join(map(str, label)) for label in split.labels[:count].tolist()]
            rows.append((name, images, [f"{title}: {label}" for title, label in zip(titles, labels, strict=True)]))
    return _draw(Path(path), rows, max(int(data.train.images.shape[-1]), 64))


def _masked(images: np.ndarray, split: SegmentationSplit, count: int) -> np.ndarray:
    """The images tinted green where the mask is set, landmarks (row, col) marked by red squares."""
    image = images.astype(np.float32) / 255
    alpha = 0.55 * split.masks[:count].numpy()[..., None].astype(np.float32)
    image += (np.array(_GREEN, np.float32) - image) * alpha
    if split.landmarks is not None:
        radius = max(1, image.shape[1] // 100)
        for i, points in enumerate(split.landmarks[:count].numpy()):
            for row, col in points[np.isfinite(points).all(axis=1)].round().astype(int):
                image[i, max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1] = _RED
    return to_uint8(image)


def _draw(path: Path, rows: list[Row], size: int) -> Path:
    # The object-oriented API with an explicit Agg canvas leaves pyplot's global backend alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(len(images) for _, images, _ in rows)
    panel = 2.0  # inches per image; the dpi shows each image at about its own resolution
    fig = Figure(figsize=(panel * columns, panel * len(rows)), dpi=max(64.0, min(size, 512) / panel))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for (label, images, titles), row in zip(rows, axes, strict=True):
        for index, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if index >= len(images):
                ax.set_axis_off()
                continue
            ax.imshow(images[index], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[index], fontsize=6)
        row[0].set_ylabel(label, fontsize=7)
    fig.subplots_adjust(left=0.03, right=0.995, top=0.97, bottom=0.005, wspace=0.02, hspace=0.12)
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
