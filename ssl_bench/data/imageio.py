"""Reading image and mask files, and LD's fundus preprocessing (ROI crop, resize, re-binarise).

Every reader returns ``uint8 (H, W, C)`` images and ``bool (H, W)`` masks, whatever the file's pixel
format, so that task plugins never deal with PIL modes. Boxes are ``(top, bottom, left, right)``,
half-open, in pixels.
"""

from __future__ import annotations

from collections.abc import Collection
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
#: How many distinct values a mask error shows.
_FEW_VALUES = 8


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


def read_mask(
    path: Path, threshold: int = 128, foreground: Collection[int] | None = None, channel: str = "first"
) -> np.ndarray:
    """The mask at ``path`` as ``bool (H, W)``, from a file of any bit depth in the usual encodings.

    A pixel's value is its grey level (1-, 8- or 16-bit) or, in colour and palette images (alpha dropped:
    transparency alone is not foreground), its first colour channel (``channel="first"``, the built-in tasks'
    rule) or its largest (``"largest"``: any colour counts, so that a mask drawn green is not lost). Then:

    - ``foreground`` declared (label values, e.g. ``(1, 2)``): the pixels holding one of them, compared with the
      grey level or a colour palette's index (label maps such as VOC's); a colour image is refused.
    - Binary: the non-zero pixels all hold one value (``{0, 1}``, ``{0, 255}``, ``{0, 65535}``, 1-bit, a mask
      drawn in one colour): those pixels, whatever ``threshold``.
    - Soft (several non-zero values, some reaching ``threshold`` on the 8-bit scale, 16-bit scaled by
      255/65535): the pixels ``>= threshold``, so that anti-aliased edges and JPEG noise fall on their side.
    - Otherwise (several non-zero values, all below ``threshold``: a label map such as ``{0, 1, 2}``): a
      :class:`DataError` naming the file and its values, and saying how to declare which labels are foreground.

    A colour mask empty in its first channel but not in the others (``"first"``) is a :class:`DataError` too, as
    is a missing or unreadable file.
    """
    if channel not in ("first", "largest"):
        raise ValueError(f"channel must be 'first' or 'largest', got {channel!r}")
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            pixels, labels = _mask_pixels(im)
    except _READ_ERRORS as error:
        raise DataError(f"{path} is not a readable image: {error}") from error
    if foreground is not None:
        if labels is None:
            raise DataError(
                f"{path} is a colour image, but foreground labels {sorted(foreground)} were declared, which need a "
                "grey or palette label map: save the label map as grey values"
            )
        return np.isin(labels, np.asarray(sorted(foreground)))
    mask = _binarised(pixels[..., 0] if channel == "first" else pixels.max(axis=2), threshold, path)
    if channel == "first" and not mask.any() and pixels.any():
        raise DataError(
            f"{path} is 0 in its first colour channel, which is the mask, but not in the others: draw the mask "
            "in red or white, or save it grey (0 and 255)"
        )
    return mask


def _mask_pixels(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A mask file's values, ``(H, W, 1)`` grey in its own dtype or ``uint8 (H, W, 3)`` colour, and its label
    values (grey levels, palette indices; None for other colour images)."""
    if im.mode == "1":
        grey = np.asarray(im).astype(np.uint8)
    elif im.mode in _SIXTEEN_BIT_MODES or im.mode in ("L", "F"):
        grey = np.asarray(im)
    elif im.mode == "LA":
        grey = np.asarray(im.convert("L"))
    else:
        # Through RGBA, which keeps palette transparency out of the colours; alpha is dropped.
        colours = np.asarray(im.convert("RGBA"))[..., :3]
        if not (colours[..., :1] == colours).all():
            return colours, (np.asarray(im) if im.mode == "P" else None)
        # Grey stored as colour or as a grey palette, whose indices GIF writers reorder: the grey levels count.
        grey = colours[..., 0]
    return grey[..., None], grey


def _binarised(plane: np.ndarray, threshold: int, path: Path) -> np.ndarray:
    """The foreground of one plane of mask values: binary, soft, or refused (see :func:`read_mask`)."""
    values = _distinct(plane)
    nonzero = values[values != 0]
    if len(nonzero) <= 1:
        return plane != 0
    if plane.dtype.kind == "f":
        raise DataError(
            f"{path} holds {len(values)} distinct float values ({_few(values)}), expected a binary mask "
            "(0 and one other value); save it as 8-bit 0/255"
        )
    eight = plane if plane.dtype == np.uint8 else _sixteen_to_eight_bit(plane)
    if int(eight.max()) >= threshold:
        return eight >= threshold
    # Several small values and none bright: a label map (or a faint soft map), never to be read as empty.
    labels = ", ".join(str(value) for value in nonzero[:_FEW_VALUES].tolist())
    raise DataError(
        f"{path} holds mask values {_few(values)}: not binary (0 and one other value) and none reaches the "
        f"soft-mask threshold {threshold} of 255, so it looks like a label map: declare which labels are "
        f"foreground, e.g. foreground = [{labels}] in a folder task's table"
    )


def _distinct(plane: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``plane``; counted rather than sorted where the type is small (faster)."""
    if plane.dtype in (np.uint8, np.uint16):
        return np.flatnonzero(np.bincount(plane.ravel())).astype(plane.dtype)
    return np.unique(plane)


def _few(values: np.ndarray) -> str:
    """The first of ``values`` for a message: ``0, 1, 2`` or ``0, 1, 2, ... (300 values)``."""
    shown = ", ".join(str(value) for value in values[:_FEW_VALUES].tolist())
    return shown if len(values) <= _FEW_VALUES else f"{shown}, ... ({len(values)} values)"


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
