"""Masks of every usual encoding and bit depth read right, through ``read_mask`` and a folder task end to end.

Each encoding writes random shapes with numpy and PIL; the expected foreground is computed here from the array
written (for soft masks: more than half the type's maximum), never by the code under test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssl_bench_tasks._folder import FolderSpec, FolderTask

from ssl_bench.data.imageio import read_mask
from ssl_bench.errors import DataError

# An encoding: (rng, height, width) -> (image to write, file suffix, expected foreground).
Encoding = Callable[[np.random.Generator, int, int], tuple[Image.Image, str, np.ndarray]]


def blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A union of 1 to 3 random rectangles: never empty, and (at least 2 px short of the frame) never full."""
    mask = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 4)):
        top, left = rng.integers(1, height - 2), rng.integers(1, width - 2)
        mask[top : rng.integers(top + 1, height - 1), left : rng.integers(left + 1, width - 1)] = True
    return mask


def disc_coverage(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Each pixel's share of a random disc, from 4 x 4 samples per pixel: an anti-aliased mask in [0, 1]."""
    centre = rng.uniform(0.3, 0.7, 2) * (height, width)
    radius = rng.uniform(0.15, 0.3) * min(height, width)
    rows = (np.arange(height * 4) + 0.5) / 4
    cols = (np.arange(width * 4) + 0.5) / 4
    inside = (rows[:, None] - centre[0]) ** 2 + (cols[None, :] - centre[1]) ** 2 <= radius**2
    return inside.reshape(height, 4, width, 4).mean(axis=(1, 3))


def a_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour other than black; it may be dark, and it may have no red."""
    colour = rng.integers(0, 256, 3)
    colour[rng.integers(0, 3)] = rng.integers(1, 256)
    return colour.astype(np.uint8)


def binary_grey(dtype: type, value: int | None, suffix: str = ".png") -> Encoding:
    """{0, value} in ``dtype``; value None: a random one in the type's range."""

    def encode(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
        top = np.iinfo(dtype).max
        v = value if value is not None else int(rng.integers(1, top + 1))
        fg = blobs(rng, height, width)
        return Image.fromarray((fg * v).astype(dtype)), suffix, fg

    return encode


def soft(dtype: type, noise: int) -> Encoding:
    """An anti-aliased disc scaled to ``dtype``'s maximum, plus uniform noise of +-``noise`` (as JPEG leaves)."""

    def encode(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
        top = np.iinfo(dtype).max
        values = np.rint(disc_coverage(rng, height, width) * top) + rng.integers(-noise, noise + 1, (height, width))
        values = np.clip(values, 0, top).astype(np.int64)
        return Image.fromarray(values.astype(dtype)), ".png", 2 * values > top  # above half the maximum

    return encode


def one_bit(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    fg = blobs(rng, height, width)
    return Image.fromarray(fg), ".png", fg


def grey_gif(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    fg = blobs(rng, height, width)
    return Image.fromarray((fg * 255).astype(np.uint8)), ".gif", fg


def grey_with_alpha(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    fg = blobs(rng, height, width)
    alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)  # alpha alone is not foreground
    return Image.fromarray(np.dstack([(fg * 255).astype(np.uint8), alpha]), "LA"), ".png", fg


def palette(black_first: bool) -> Encoding:
    """Indices into a palette of black and a random colour (black at index 0 or 1) and random unused entries."""

    def encode(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
        fg = blobs(rng, height, width)
        entries = rng.integers(0, 256, (256, 3)).astype(np.uint8)
        black, colour = (0, 1) if black_first else (1, 0)
        entries[black], entries[colour] = 0, a_colour(rng)
        image = Image.fromarray(np.where(fg, colour, black).astype(np.uint8), "P")
        image.putpalette(entries.ravel().tolist())
        return image, ".png", fg

    return encode


def rgb_one_colour(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    fg = blobs(rng, height, width)
    return Image.fromarray(fg[..., None] * a_colour(rng)), ".png", fg


def rgb_bright_colours(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    """Foreground in 4 random colours, each with one channel of 128 or more (classes drawn in colours)."""
    colours = np.stack([a_colour(rng) for _ in range(4)])
    colours[np.arange(4), rng.integers(0, 3, 4)] = rng.integers(128, 256, 4)
    fg = blobs(rng, height, width)
    pixels = colours[rng.integers(0, 4, (height, width))] * fg[..., None]
    return Image.fromarray(pixels.astype(np.uint8)), ".png", fg


def rgba(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, str, np.ndarray]:
    """A colour on the foreground; alpha random everywhere, so that opaque black background is not foreground."""
    fg = blobs(rng, height, width)
    alpha = rng.integers(1, 256, (height, width), dtype=np.uint8)
    return Image.fromarray(np.dstack([fg[..., None] * a_colour(rng), alpha]).astype(np.uint8)), ".png", fg


GREY_ENCODINGS: dict[str, Encoding] = {
    "8-bit 0/255": binary_grey(np.uint8, 255),
    "8-bit 0/1": binary_grey(np.uint8, 1),
    "8-bit 0/v": binary_grey(np.uint8, None),
    "8-bit 0/1 bmp": binary_grey(np.uint8, 1, ".bmp"),
    "16-bit 0/1": binary_grey(np.uint16, 1),
    "16-bit 0/65535": binary_grey(np.uint16, 65535),
    "16-bit 0/v": binary_grey(np.uint16, None),
    "16-bit 0/1 tiff": binary_grey(np.uint16, 1, ".tif"),
    "8-bit soft": soft(np.uint8, noise=12),
    "16-bit soft": soft(np.uint16, noise=3000),
    "1-bit": one_bit,
    "grey gif": grey_gif,
    "grey and alpha": grey_with_alpha,
}
COLOUR_ENCODINGS: dict[str, Encoding] = {
    "palette, black first": palette(black_first=True),
    "palette, black second": palette(black_first=False),
    "rgb, one colour": rgb_one_colour,
    "rgb, bright colours": rgb_bright_colours,
    "rgba": rgba,
}
ENCODINGS = {**GREY_ENCODINGS, **COLOUR_ENCODINGS}
#: The PIL mode each encoding must come back as, so that each test is of the encoding it names.
MODES: dict[str, set[str]] = {
    **{name: {"L"} for name in GREY_ENCODINGS if name.startswith("8-bit")},
    **{name: {"I;16", "I"} for name in GREY_ENCODINGS if name.startswith("16-bit")},
    "1-bit": {"1"},
    "grey gif": {"P", "L"},
    "grey and alpha": {"LA"},
    "palette, black first": {"P"},
    "palette, black second": {"P"},
    "rgb, one colour": {"RGB"},
    "rgb, bright colours": {"RGB"},
    "rgba": {"RGBA"},
}


def write(encoding: str, rng: np.random.Generator, path_stem: Path, height: int, width: int) -> tuple[Path, np.ndarray]:
    image, suffix, expected = ENCODINGS[encoding](rng, height, width)
    path = path_stem.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    with Image.open(path) as written:
        assert written.mode in MODES[encoding], f"{encoding} was written as {written.mode}"
    return path, expected


def assert_same_foreground(mask: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert mask.dtype == np.bool_ and mask.shape == expected.shape, what
    found, wrote = int(mask.sum()), int(expected.sum())
    assert found == wrote, f"{what}: {found} foreground pixels, wrote {wrote}"
    np.testing.assert_array_equal(mask, expected, err_msg=what)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_read_mask_reads_every_encoding_with_any_colour(tmp_path: Path, encoding: str) -> None:
    for seed in range(12):
        rng = np.random.default_rng(seed)
        height, width = (int(side) for side in rng.integers(8, 48, 2))
        path, expected = write(encoding, rng, tmp_path / f"mask{seed}", height, width)
        assert_same_foreground(read_mask(path, channel="largest"), expected, f"{encoding}, seed {seed}")


@pytest.mark.parametrize("encoding", GREY_ENCODINGS)
def test_read_mask_default_reads_every_grey_encoding(tmp_path: Path, encoding: str) -> None:
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        height, width = (int(side) for side in rng.integers(8, 48, 2))
        path, expected = write(encoding, rng, tmp_path / f"mask{seed}", height, width)
        assert_same_foreground(read_mask(path), expected, f"{encoding}, seed {seed}")


@pytest.mark.parametrize("seed", [0, 1])
def test_folder_task_reads_a_folder_mixing_every_encoding(tmp_path: Path, seed: int) -> None:
    # 512 x 512, the folder task's size, so that its resize keeps every pixel and counts stay comparable.
    rng = np.random.default_rng(seed)
    root = tmp_path / "mixed"
    (root / "images").mkdir(parents=True)
    expected: dict[str, np.ndarray] = {}
    for index, encoding in enumerate(ENCODINGS):
        image_id = f"case{index:02d}"
        Image.fromarray(np.full((512, 512), 90, np.uint8)).save(root / "images" / f"{image_id}.png")
        _, expected[image_id] = write(encoding, rng, root / "masks" / image_id, 512, 512)
    task = FolderTask(FolderSpec(name="mixed", folders=("mixed",), modality="ultrasound", channels=1))
    data = task.load(tmp_path)
    assert len(data.train) + len(data.test) == len(ENCODINGS)
    for split in (data.train, data.test):
        for image_id, mask in zip(split.ids, split.masks.numpy(), strict=True):
            encoding = list(ENCODINGS)[int(image_id[4:])]
            assert_same_foreground(mask, expected[image_id], f"{encoding} in a folder task, seed {seed}")


# --- Label maps: refused unless their foreground labels are declared ------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_map_is_refused_naming_the_file_its_values_and_the_fix(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "labels.png"
    Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], dtype)).save(path)
    with pytest.raises(DataError) as caught:
        read_mask(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert "values 0, 1, 2" in message and "foreground = [1, 2]" in message


def test_faint_soft_map_is_refused_rather_than_read_empty(tmp_path: Path) -> None:
    path = tmp_path / "faint.png"
    Image.fromarray(np.arange(0, 100, dtype=np.uint8).reshape(10, 10)).save(path)  # 0..99: none reaches 128
    values = "0, 1, 2, 3, 4, 5, 6, 7, ... (100 values)"
    with pytest.raises(DataError, match=re.escape(f"{path} holds mask values {values}")):
        read_mask(path)


@pytest.mark.parametrize(("dtype", "values"), [(np.uint8, (0, 1, 2, 3)), (np.uint16, (0, 1000, 2000, 65535))])
def test_declared_foreground_labels_are_read(tmp_path: Path, dtype: type, values: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    labels = np.array(values, dtype)[rng.integers(0, 4, (20, 30))]
    path = tmp_path / "labels.png"
    Image.fromarray(labels).save(path)
    wanted = values[1:3]
    expected = (labels == wanted[0]) | (labels == wanted[1])
    assert_same_foreground(read_mask(path, foreground=wanted), expected, "declared labels")


def test_declared_labels_of_a_colour_palette_are_its_indices(tmp_path: Path) -> None:
    # VOC-style: index 1 is dark red, 2 dark green, 3 olive; the labels are the indices, not the colours.
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0])
    image.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png", foreground=[2]), indices == 2)


def test_declared_labels_of_a_grey_gif_are_its_grey_levels(tmp_path: Path) -> None:
    # A GIF writer may reorder a grey palette's indices; the grey levels are what the user sees and declares.
    levels = np.array([[0, 30, 255], [255, 30, 0]], np.uint8)
    Image.fromarray(levels).save(tmp_path / "levels.gif")
    np.testing.assert_array_equal(read_mask(tmp_path / "levels.gif", foreground=[30]), levels == 30)


def test_declared_labels_of_a_colour_image_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    Image.fromarray(np.array([[[0, 0, 0], [9, 80, 0]]], np.uint8)).save(path)
    with pytest.raises(DataError, match=re.escape(f"{path} is a colour image, but foreground labels [1, 2]")):
        read_mask(path, foreground=[2, 1])


# --- The built-in tasks' first-channel rule, and floats -------------------------------------------------------


def test_first_channel_rule_reads_red_and_white_and_refuses_a_mask_without_red(tmp_path: Path) -> None:
    fg = np.zeros((6, 7), bool)
    fg[1:4, 2:6] = True
    for name, colour in (("red", (255, 0, 0)), ("white", (255, 255, 255)), ("dark red", (40, 0, 0))):
        Image.fromarray(fg[..., None] * np.array(colour, np.uint8)).save(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(read_mask(tmp_path / f"{name}.png"), fg, err_msg=name)
    green = tmp_path / "green.png"
    Image.fromarray(fg[..., None] * np.array((0, 200, 0), np.uint8)).save(green)
    with pytest.raises(DataError, match=re.escape(f"{green} is 0 in its first colour channel")):
        read_mask(green)
    np.testing.assert_array_equal(read_mask(green, channel="largest"), fg)


def test_float_masks_must_be_binary(tmp_path: Path) -> None:
    binary = np.array([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    Image.fromarray(binary).save(tmp_path / "binary.tif")
    np.testing.assert_array_equal(read_mask(tmp_path / "binary.tif"), binary == 1)
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "soft.tif")
    with pytest.raises(DataError, match=r"soft\.tif holds 3 distinct float values \(0\.0, 0\.5, 1\.0\)"):
        read_mask(tmp_path / "soft.tif")


def test_unknown_channel_rule_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channel must be 'first' or 'largest'"):
        read_mask(tmp_path / "any.png", channel="mean")
