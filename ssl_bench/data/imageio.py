"""Reading image and mask files, and LD's fundus preprocessing (ROI crop, resize, re-binarise).

Every reader returns ``uint8 (H, W, C)`` images and ``bool (H, W)`` masks, whatever the file's pixel
format, so that task plugins never deal with PIL modes. Boxes are ``(top, bottom, left, right)``,
half-open, in pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ssl_bench.errors import DataError

Box = tuple[int, int, int, int]

#: LD re-binarises resized labels at this fraction of 255 (HRF's at 0.01).
MASK_RESIZE_THRESHOLD = 0.3
#: File endings (lower case) that folder readers take for images; anything else (ATTRIBUTION.txt) is ignored.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"})

_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I"})
_PIL_MODE_BY_CHANNELS = {1: "L", 3: "RGB"}
# PIL raises these for missing, truncated or undecodable files (UnidentifiedImageError is an OSError).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_image(path: Path, channels: int | None = None) -> np.ndarray:
    """The image at ``path`` as ``uint8 (H, W, C)``.

    ``channels=None`` keeps the file's colour (grey -> 1, colour or palette -> 3; alpha is dropped),
    1 converts to grey (PIL's ITU-R 601 luma), 3 to RGB. 1-bit images become 0/255 and 16-bit ones are
    scaled by 255/65535. Raises :class:`DataError` naming the file when it is missing or unreadable.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            array = _to_grey_or_rgb(im, path)
    except _READ_ERRORS as error:
        raise DataError(f"{path} is not a readable image: {error}") from error
    if channels is not None and array.shape[2] != channels:
        mode = _PIL_MODE_BY_CHANNELS[channels]
        source = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
        array = _as_hwc(np.asarray(source.convert(mode)))
    return array


def _to_grey_or_rgb(im: Image.Image, path: Path) -> np.ndarray:
    """``uint8 (H, W, 1)`` or ``(H, W, 3)`` from any PIL mode that has an 8-bit meaning."""
    if im.mode in _SIXTEEN_BIT_MODES:
        return _as_hwc(_sixteen_to_eight_bit(np.asarray(im)))
    if im.mode == "F":
        raise DataError(f"{path} has 32-bit float pixels, which have no standard 8-bit scale")
    if im.mode in ("1", "L", "LA"):
        target = "L"
    elif im.mode == "P" and "transparency" in im.info:
        # Going through RGBA keeps PIL from warning about palette transparency; alpha is dropped below.
        im, target = im.convert("RGBA"), "RGB"
    else:
        target = "RGB"
    return _as_hwc(np.asarray(im.convert(target)))


def _sixteen_to_eight_bit(values: np.ndarray) -> np.ndarray:
    # A fixed full-range scale (not per-image min-max) keeps intensities comparable across files.
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[..., None] if array.ndim == 2 else array, dtype=np.uint8)


def read_mask(path: Path, threshold: int = 128) -> np.ndarray:
    """The binary mask at ``path``: its grey level (first channel if colour) ``>= threshold``."""
    return read_image(path)[..., 0] >= threshold


def fundus_roi_box(image: np.ndarray, threshold: int = 20, margin: int = 16) -> Box:
    """LD's fundus region of interest: the bounding box of the largest region brighter than ``threshold``.

    A pixel is bright when any channel exceeds ``threshold``; regions are 8-connected (diagonal neighbours
    join), as in LD's ``identify_roi``. The box grows by ``margin`` on each side and is clipped to the
    image. An image with no bright pixel keeps its whole frame: there is nothing to crop to.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    bright = image > threshold
    if bright.ndim == 3:
        bright = bright.any(axis=2)
    height, width = bright.shape
    labels, count = ndimage.label(bright, structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return (0, height, 0, width)
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = ndimage.find_objects(labels, max_label=largest)[largest - 1]
    return (
        max(rows.start - margin, 0),
        min(rows.stop + margin, height),
        max(cols.start - margin, 0),
        min(cols.stop + margin, width),
    )


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    """``array[top:bottom, left:right]`` for an ``(H, W, ...)`` array; the box must be inside it."""
    top, bottom, left, right = box
    height, width = array.shape[:2]
    if not (0 <= top < bottom <= height and 0 <= left < right <= width):
        raise ValueError(f"box {box} is empty or outside an image of {height}x{width}")
    return array[top:bottom, left:right]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``uint8 (H, W, C)`` -> ``uint8 (size, size, C)``, bilinear (PIL, antialiased when shrinking)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 (H, W, C), got {image.dtype} {image.shape}")
    if image.shape[2] == 3:
        return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    # Channel by channel: PIL resizes RGBA/LA premultiplied by alpha, which would mix channels.
    planes = [_resize_plane(image[..., c], size) for c in range(image.shape[2])]
    return np.stack(planes, axis=2)


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: int, threshold: float = MASK_RESIZE_THRESHOLD) -> np.ndarray:
    """``bool (H, W)`` -> ``bool (size, size)``: 0/255 resized bilinearly, then kept where > ``threshold`` * 255."""
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"mask must be bool (H, W), got {mask.dtype} {mask.shape}")
    resized = _resize_plane(mask.astype(np.uint8) * 255, size)
    return resized > threshold * 255
