"""Image readers and LD preprocessing, on files written here with known pixels."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_bench.data.imageio import crop, fundus_roi_box, read_image, read_mask, resize_image, resize_mask
from ssl_bench.errors import DataError

RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [0, 0, 0], [255, 255, 255]]], np.uint8)


def save(array: np.ndarray, path: Path, mode: str | None = None, **options) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **options)
    return path


@pytest.mark.parametrize("name", ["rgb.png", "rgb.tif", "rgb.bmp", "rgb.ppm"])
def test_colour_files_read_exactly(tmp_path: Path, name: str) -> None:
    image = read_image(save(RGB, tmp_path / name))
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, RGB)


def test_lzw_tiff_reads_exactly(tmp_path: Path) -> None:
    np.testing.assert_array_equal(read_image(save(RGB, tmp_path / "a.tif", compression="tiff_lzw")), RGB)


def test_grey_gets_one_channel_and_converts_both_ways(tmp_path: Path) -> None:
    path = save(np.array([[0, 7], [128, 255]], np.uint8), tmp_path / "grey.png")
    np.testing.assert_array_equal(read_image(path), [[[0], [7]], [[128], [255]]])
    np.testing.assert_array_equal(read_image(path, channels=3)[1, 0], [128, 128, 128])


def test_colour_to_grey_uses_luma(tmp_path: Path) -> None:
    # ITU-R 601: 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1, rounded by PIL.
    grey = read_image(save(RGB, tmp_path / "rgb.png"), channels=1)
    assert grey.shape == (2, 3, 1)
    np.testing.assert_array_equal(grey[0, :, 0], [76, 150, 29])


def test_one_bit_image_reads_as_0_and_255(tmp_path: Path) -> None:
    bits = np.array([[0, 255, 0], [255, 255, 0]], np.uint8)
    path = save(bits, tmp_path / "bits.png", mode="1")
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(read_image(path)[..., 0], bits)


def test_palette_gif_reads_as_rgb(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2, 1])
    palette.save(tmp_path / "p.gif")
    assert Image.open(tmp_path / "p.gif").mode == "P"
    expected = [[[0, 0, 0], [255, 0, 0]], [[0, 0, 255], [255, 0, 0]]]
    np.testing.assert_array_equal(read_image(tmp_path / "p.gif"), expected)


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])
def test_sixteen_bit_scales_to_eight(tmp_path: Path, name: str) -> None:
    path = save(np.array([[0, 1000], [65535, 30000]], np.uint16), tmp_path / name)
    # 1000 * 255 / 65535 = 3.9 -> 4; 30000 * 255 / 65535 = 116.7 -> 117.
    np.testing.assert_array_equal(read_image(path)[..., 0], [[0, 4], [255, 117]])


def test_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])
    np.testing.assert_array_equal(read_image(save(rgba, tmp_path / "a.png")), RGB)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(DataError, match=re.escape(f"{path} is not a readable image")):
        read_image(path)


@pytest.mark.parametrize("content", [b"not an image", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"])
def test_unreadable_file_names_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_image(path)
    assert str(path) in str(caught.value)


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    path = save(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3), tmp_path / "cut.tif")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_image(path)


def test_read_mask_thresholds_grey_and_first_channel(tmp_path: Path) -> None:
    grey = save(np.array([[0, 127, 128, 255]], np.uint8), tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(grey), [[False, False, True, True]])
    np.testing.assert_array_equal(read_mask(grey, threshold=200), [[False, False, False, True]])
    colour = save(np.array([[[200, 0, 0], [0, 200, 200]]], np.uint8), tmp_path / "c.png")
    mask = read_mask(colour)
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, [[True, False]])


def two_blobs() -> np.ndarray:
    """40x50: a small white blob and a larger one lit in the green channel only."""
    image = np.zeros((40, 50, 3), np.uint8)
    image[2:5, 2:5] = 255  # 9 pixels
    image[10:20, 30:45, 1] = 100  # 150 pixels: rows 10-19, columns 30-44
    image[20:25, 30:45] = 20  # not brighter than the threshold: must not grow the box
    return image


def test_roi_box_is_the_largest_region_plus_margin() -> None:
    assert fundus_roi_box(two_blobs(), threshold=20, margin=3) == (7, 23, 27, 48)


def test_roi_box_is_clipped_to_the_image() -> None:
    # Unclipped it would be (10 - 16, 20 + 16, 30 - 16, 45 + 16) = (-6, 36, 14, 61).
    assert fundus_roi_box(two_blobs()) == (0, 36, 14, 50)


def test_roi_box_accepts_grey_and_keeps_a_dark_frame() -> None:
    assert fundus_roi_box(two_blobs()[..., 1], margin=0) == (10, 20, 30, 45)
    assert fundus_roi_box(np.zeros((6, 7, 3), np.uint8)) == (0, 6, 0, 7)


def test_roi_regions_are_8_connected() -> None:
    # A diagonal run of 6 pixels (one region only if diagonal neighbours join) and a 2x2 block of 4.
    image = np.zeros((20, 20), np.uint8)
    for i in range(2, 8):
        image[i, i] = 200
    image[15:17, 15:17] = 200
    assert fundus_roi_box(image, margin=0) == (2, 8, 2, 8)  # 4-connectivity would give the block, (15, 17, 15, 17)


def test_crop_takes_the_half_open_box() -> None:
    array = np.arange(20).reshape(4, 5)
    np.testing.assert_array_equal(crop(array, (1, 3, 2, 4)), [[7, 8], [12, 13]])
    with pytest.raises(ValueError, match="outside"):
        crop(array, (0, 5, 0, 5))


# PIL's bilinear filter shrinking 4 -> 2 spans 2 input pixels each side of an output centre (at input
# 1.0 and 3.0), with triangle weights 0.25, 0.75, 0.75, 0.25, renormalised over the pixels inside the
# image: output 0 weighs inputs 0, 1, 2 by 3/7, 3/7, 1/7; output 1 weighs inputs 1, 2, 3 by 1/7, 3/7, 3/7.
COLUMN_2 = np.zeros((4, 4), bool)
COLUMN_2[:, 2] = True  # -> 255/7 = 36 and 3 * 255/7 = 109
BLOCK = np.zeros((4, 4), bool)
BLOCK[1:3, 1:3] = True  # -> (4/7)^2 * 255 = 83 everywhere


def test_resize_image_is_bilinear() -> None:
    image = np.dstack([COLUMN_2 * np.uint8(255), BLOCK * np.uint8(255), np.full((4, 4), 50, np.uint8)])
    resized = resize_image(image, 2)
    assert resized.shape == (2, 2, 3)
    assert resized.dtype == np.uint8
    np.testing.assert_allclose(resized[..., 0], [[36, 109], [36, 109]], atol=1)
    np.testing.assert_allclose(resized[..., 1], [[83, 83], [83, 83]], atol=1)
    np.testing.assert_array_equal(resized[..., 2], 50)


def test_resize_image_keeps_odd_channel_counts_apart() -> None:
    image = np.dstack([COLUMN_2 * np.uint8(255), np.zeros((4, 4), np.uint8)])  # an "alpha" of 0
    resized = resize_image(image, 2)
    np.testing.assert_allclose(resized[..., 0], [[36, 109], [36, 109]], atol=1)
    np.testing.assert_array_equal(resized[..., 1], 0)


def test_resize_mask_rebinarises_at_0_3() -> None:
    # 36 < 76.5 < 109: only the right column survives.
    np.testing.assert_array_equal(resize_mask(COLUMN_2, 2), [[False, True], [False, True]])
    # 83 > 76.5 although < 127.5: a 0.5 rule would give an empty mask.
    assert resize_mask(BLOCK, 2).all()
    assert resize_mask(BLOCK, 2).dtype == np.bool_


def test_resize_mask_threshold_is_a_fraction_of_255() -> None:
    # Columns 0 of 2 set, enlarged to 8: PIL's bilinear output column j samples x = (j + 0.5) / 4 - 0.5 and
    # is 255 * (1 - x) between the two inputs: 255, 255, 223, 159, 96, 32, 0, 0.
    left = np.array([[True, False], [True, False]])
    row = [True] * 5 + [False] * 3  # > 76.5
    np.testing.assert_array_equal(resize_mask(left, 8), [row] * 8)
    row = [True] * 6 + [False] * 2  # > 2.55: column 5 (32) too
    np.testing.assert_array_equal(resize_mask(left, 8, threshold=0.01), [row] * 8)


def test_resize_mask_keeps_a_full_size_mask() -> None:
    np.testing.assert_array_equal(resize_mask(BLOCK, 4), BLOCK)
