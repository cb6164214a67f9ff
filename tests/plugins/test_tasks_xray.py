"""Chest X-ray tasks (JSRT + SCR, SIIM-ACR, Montgomery, Shenzhen) on small files in the owners' formats."""

from __future__ import annotations

import csv
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image
from ssl_bench_tasks import jsrt, siim
from ssl_bench_tasks.jsrt import JsrtClavicle, JsrtHeart, JsrtLung, decode_jsrt, read_jsrt
from ssl_bench_tasks.montgomery import MontgomeryLung, ShenzhenLung
from ssl_bench_tasks.siim import SiimPneumothorax, decode_rle, decode_rows, read_dicom, read_rle_csv

from ssl_bench.errors import DataError

XRAY_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0)

# A 4x4 mask and its SIIM RLE, worked out by hand. Down the columns the pixels are
# col 0: 0 0 0 1 | col 1: 1 1 0 0 | col 2: 1 1 0 0 | col 3: 0 0 0 0, so the runs start at flat offsets 3
# (length 3) and 8 (length 2); the second start is relative to the first run's end, 6: "3 3 2 2".
MASK_4X4 = np.array(
    [
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
        [1, 0, 0, 0],
    ],
    dtype=bool,
)
RLE_4X4 = "3 3 2 2"
# A second row for the same image: the last column, offsets 12 to 15.
RLE_LAST_COLUMN = "12 4"


def assert_boxes(mask: np.ndarray, boxes: list[tuple[slice, slice]], margin: int) -> None:
    """``mask`` is set inside each box shrunk by ``margin`` and clear outside them all grown by it.

    Resizing blurs a mask's edges by a few pixels, so the ``margin`` on either side of them is not checked.
    """
    inside, outside = np.zeros(mask.shape, bool), np.ones(mask.shape, bool)
    for rows, cols in boxes:
        inside[rows.start + margin : rows.stop - margin, cols.start + margin : cols.stop - margin] = True
        outside[max(rows.start - margin, 0) : rows.stop + margin, max(cols.start - margin, 0) : cols.stop + margin] = (
            False
        )
    assert mask[inside].all(), "pixels inside a box are clear"
    assert not mask[outside].any(), "pixels outside every box are set"


# --- SIIM run-length encoding -----------------------------------------------------------------------------


def test_rle_decodes_relative_offsets_down_the_columns() -> None:
    np.testing.assert_array_equal(decode_rle(RLE_4X4, 4, 4), MASK_4X4)


def test_rle_of_a_wide_image_is_reshaped_width_by_height_then_transposed() -> None:
    # 2 rows x 3 columns; down the columns: 1 1 | 0 0 | 1 0 -> runs at 0 (length 2) and 4 (length 1).
    expected = np.array([[1, 0, 1], [1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(decode_rle("0 2 2 1", height=2, width=3), expected)


def test_rle_minus_one_is_an_empty_mask() -> None:
    assert not decode_rle(" -1", 4, 4).any()


def test_several_rows_of_one_image_are_merged() -> None:
    expected = MASK_4X4.copy()
    expected[:, 3] = True
    np.testing.assert_array_equal(decode_rows([f" {RLE_4X4}", f" {RLE_LAST_COLUMN}"], 4, 4), expected)


@pytest.mark.parametrize("rle", ["3 3 2", "3 -1", "3 3 x 2", "10 7"])
def test_malformed_rle_is_a_data_error(rle: str) -> None:
    with pytest.raises(DataError, match="RLE"):
        decode_rle(rle, 4, 4)


def test_rle_csv_keeps_the_rows_of_each_image_in_order(tmp_path: Path) -> None:
    path = tmp_path / "train-rle.csv"
    path.write_text(f"ImageId, EncodedPixels\na, {RLE_4X4}\nb, -1\na, {RLE_LAST_COLUMN}\n")
    assert read_rle_csv(path) == {"a": [f" {RLE_4X4}", f" {RLE_LAST_COLUMN}"], "b": [" -1"]}


def test_rle_csv_without_the_spaced_column_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train-rle.csv"
    path.write_text(f"ImageId,EncodedPixels\na,{RLE_4X4}\n")
    with pytest.raises(DataError, match=r"train-rle\.csv lacks"):
        read_rle_csv(path)


# --- SIIM DICOM ------------------------------------------------------------------------------------------


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 8) -> Path:
    """A minimal secondary-capture DICOM file, uncompressed little-endian, as SIIM's are."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 8 if bits == 8 else 16
    dataset.BitsStored = bits
    dataset.HighBit = bits - 1
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint8 if bits == 8 else "<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path)
    assert pydicom.dcmread(path).Rows == pixels.shape[0]
    return path


def test_dicom_8_bit_pixels_are_kept(tmp_path: Path) -> None:
    pixels = np.array([[0, 10, 200], [255, 7, 128]], dtype=np.uint8)
    np.testing.assert_array_equal(read_dicom(write_dicom(tmp_path / "a.dcm", pixels)), pixels)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = np.array([[0, 10], [255, 128]], dtype=np.uint8)
    path = write_dicom(tmp_path / "a.dcm", pixels, photometric="MONOCHROME1")
    np.testing.assert_array_equal(read_dicom(path), [[255, 245], [0, 127]])


def test_dicom_12_bit_pixels_are_scaled_from_their_full_range(tmp_path: Path) -> None:
    pixels = np.array([[0, 4095], [2048, 16]], dtype=np.uint16)
    path = write_dicom(tmp_path / "a.dcm", pixels, bits=12)
    # v * 255 / 4095, rounded: 2048 -> 127.53 -> 128, 16 -> 0.996 -> 1.
    np.testing.assert_array_equal(read_dicom(path), [[0, 255], [128, 1]])


def test_corrupt_dicom_is_a_data_error_naming_it(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    with pytest.raises(DataError, match=r"broken\.dcm"):
        read_dicom(path)


def test_missing_pydicom_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` raise ImportError
    with pytest.raises(DataError, match=r"pip install 'ssl-bench\[dicom\]'"):
        read_dicom(tmp_path / "a.dcm")


# --- SIIM task ------------------------------------------------------------------------------------------

SIIM_TRAIN = siim.LD_IDS["train"][:3]
SIIM_TEST = siim.LD_IDS["test"][:1]


@pytest.fixture
def siim_root(tmp_path: Path) -> Path:
    """Four of LD's images in SIIM's layout: 16x16 DICOMs, one with two RLE rows, plus a negative image."""
    root = tmp_path / "siim-acr-pneumothorax"
    # A column gradient, so that the resized image can be checked.
    pixels = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    ids = [*SIIM_TRAIN, *SIIM_TEST, "1.2.276.0.7230010.3.1.4.8323329.0.0.0"]
    for index, image_id in enumerate(ids):
        write_dicom(root / "dicom-images-train" / f"study{index}" / f"series{index}" / f"{image_id}.dcm", pixels)
    # The left half of the 16x16 image is 128 pixels from offset 0; the right half, offsets 128 to 255.
    rows = [
        (SIIM_TRAIN[0], " 0 128"),
        (SIIM_TRAIN[1], " 0 64"),
        (SIIM_TRAIN[1], " 64 64"),
        (SIIM_TRAIN[2], " 128 128"),
        (SIIM_TEST[0], " 0 256"),
        (ids[-1], " -1"),
    ]
    with (root / "train-rle.csv").open("w", newline="") as stream:
        stream.write("ImageId, EncodedPixels\n")
        stream.writelines(f"{image_id},{rle}\n" for image_id, rle in rows)
    return root


def test_siim_loads_the_present_ld_images_in_ld_order(siim_root: Path) -> None:
    data = SiimPneumothorax().load(siim_root.parent)
    assert data.train.ids == SIIM_TRAIN
    assert data.test.ids == SIIM_TEST
    assert tuple(data.train.images.shape) == (3, 1, 512, 512)
    column = data.train.images[0, 0, 256]
    assert column[:32].max() <= 8 and column[-32:].min() >= 232  # the gradient from 0 to 240 survives


def test_siim_masks_merge_rows_and_follow_the_columns(siim_root: Path) -> None:
    masks = SiimPneumothorax().load(siim_root.parent).train.masks.numpy()
    left, right = (slice(0, 512), slice(0, 256)), (slice(0, 512), slice(256, 512))
    assert_boxes(masks[0], [left], margin=16)  # 16 -> 512 blurs edges over 32 px
    assert_boxes(masks[1], [left], margin=16)  # two rows of 64 pixels add up to the same half
    assert_boxes(masks[2], [right], margin=16)


def test_siim_image_without_an_rle_row_is_a_data_error(siim_root: Path) -> None:
    rows = (siim_root / "train-rle.csv").read_text().splitlines()
    (siim_root / "train-rle.csv").write_text("\n".join(row for row in rows if SIIM_TEST[0] not in row) + "\n")
    with pytest.raises(DataError, match=rf"train-rle\.csv has no row for {SIIM_TEST[0]}"):
        SiimPneumothorax().load(siim_root.parent)


def test_siim_metadata() -> None:
    task = SiimPneumothorax()
    assert (task.modality, task.channels, task.rotation_degrees) == ("cxr", 1, 30.0)
    assert task.label_fractions == XRAY_FRACTIONS
    assert task.paper_batch_size == 8
    assert task.expected_counts == (1334, 1335)


def test_siim_without_the_csv_says_what_is_missing(siim_root: Path) -> None:
    (siim_root / "train-rle.csv").unlink()
    assert SiimPneumothorax().availability(siim_root.parent).ok  # its folder is there: incomplete, not absent
    with pytest.raises(DataError, match=r"first \S*siim-acr-pneumothorax/train-rle\.csv; .*kaggle\.com"):
        SiimPneumothorax().load(siim_root.parent)


# --- JSRT raw images and SCR masks ----------------------------------------------------------------------


def jsrt_bytes(top_left: int, top_right: int, bottom_left: int, bottom_right: int) -> bytes:
    """A 2048x2048 JSRT image of four constant quadrants, packed as big-endian 16-bit words."""
    half = 1024
    top = struct.pack(f">{2 * half}H", *([top_left] * half + [top_right] * half))
    bottom = struct.pack(f">{2 * half}H", *([bottom_left] * half + [bottom_right] * half))
    return top * half + bottom * half


def test_jsrt_bytes_are_big_endian_12_bit_values(tmp_path: Path) -> None:
    raw = struct.pack(">4H", 0, 4095, 1, 256) + bytes(2 * (2048 * 2048 - 4))
    values = decode_jsrt(raw, tmp_path / "JPCLN001.IMG")
    assert values.shape == (2048, 2048)
    assert values[0, :4].tolist() == [0, 4095, 1, 256]
    assert not values[0, 4:].any()


def test_little_endian_bytes_are_refused(tmp_path: Path) -> None:
    raw = struct.pack("<2H", 4095, 1) + bytes(2 * (2048 * 2048 - 2))
    with pytest.raises(DataError, match="above 4095"):
        decode_jsrt(raw, tmp_path / "JPCLN001.IMG")


def test_truncated_jsrt_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "JPCLN001.IMG"
    path.write_bytes(struct.pack(">3H", 1, 2, 3))
    with pytest.raises(DataError, match=r"JPCLN001\.IMG has 6 bytes"):
        read_jsrt(path)


JSRT_TRAIN = jsrt.LD_IDS["train"][:2]
JSRT_TEST = jsrt.LD_IDS["test"][:1]
SCR_PARTS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")


def write_gif_mask(path: Path, rows: slice, cols: slice) -> None:
    """A 1024x1024 SCR mask: 255 inside ``[rows, cols]``, 0 elsewhere."""
    mask = np.zeros((1024, 1024), np.uint8)
    mask[rows, cols] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, format="GIF")


@pytest.fixture(scope="module")
def jsrt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three of LD's JSRT images (in reverse LD order on disk) with all five SCR masks each."""
    root = tmp_path_factory.mktemp("data") / "JSRT"
    images = root / "All247images"
    images.mkdir(parents=True)
    for image_id in (*JSRT_TRAIN[::-1], *JSRT_TEST):
        (images / f"{image_id}.IMG").write_bytes(jsrt_bytes(0, 4095, 1000, 3095))
    boxes = {  # (rows, cols) on the 1024 grid, each a multiple of 2 so that it maps exactly onto 512
        "left lung": (slice(256, 768), slice(128, 448)),
        "right lung": (slice(256, 768), slice(576, 896)),
        "heart": (slice(512, 896), slice(384, 704)),
        "left clavicle": (slice(128, 192), slice(128, 448)),
        "right clavicle": (slice(128, 192), slice(576, 896)),
    }
    for split, ids in (("fold1", JSRT_TRAIN), ("fold2", JSRT_TEST)):
        for image_id in ids:
            for part, (rows, cols) in boxes.items():
                write_gif_mask(root / "scratch" / split / "masks" / part / f"{image_id}.gif", rows, cols)
    return root


def test_jsrt_follows_the_ld_fold_order(jsrt_root: Path) -> None:
    data = JsrtLung().load(jsrt_root.parent)
    assert data.train.ids == JSRT_TRAIN
    assert data.test.ids == JSRT_TEST


def test_jsrt_image_is_inverted_min_max_scaled_and_resized(jsrt_root: Path) -> None:
    image = JsrtLung().load(jsrt_root.parent).train.images[0, 0].numpy()
    assert image.shape == (512, 512)
    # Raw quadrants 0, 4095, 1000, 3095 -> display 4095 - raw -> min-max to 0..255: 255, 0, 193, 62.
    assert [image[128, 128], image[128, 384], image[384, 128], image[384, 384]] == [255, 0, 193, 62]


def test_scr_left_and_right_are_merged_and_resized_on_their_own_grid(jsrt_root: Path) -> None:
    lungs = JsrtLung().load(jsrt_root.parent).train.masks[0].numpy()
    expected = np.zeros((512, 512), bool)
    expected[128:384, 64:224] = True  # left lung, at half its 1024-grid coordinates
    expected[128:384, 288:448] = True  # right lung
    np.testing.assert_array_equal(lungs, expected)


@pytest.mark.parametrize(
    ("task", "box"),
    [(JsrtHeart(), (slice(256, 448), slice(192, 352))), (JsrtClavicle(), (slice(64, 96), slice(64, 224)))],
)
def test_scr_heart_and_clavicles(jsrt_root: Path, task, box: tuple[slice, slice]) -> None:
    mask = task.load(jsrt_root.parent).test.masks[0].numpy()
    assert mask[box].all()
    assert mask.sum() == mask[box].sum() * (2 if task.name == "jsrt-clavicle" else 1)


def test_jsrt_missing_scr_mask_is_named(jsrt_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "JSRT"
    (root / "All247images").mkdir(parents=True)
    (root / "All247images" / f"{JSRT_TEST[0]}.IMG").symlink_to(jsrt_root / "All247images" / f"{JSRT_TEST[0]}.IMG")
    (root / "All247images" / f"{JSRT_TRAIN[0]}.IMG").symlink_to(jsrt_root / "All247images" / f"{JSRT_TRAIN[0]}.IMG")
    (root / "scratch").mkdir()
    assert JsrtLung().availability(tmp_path).ok
    with pytest.raises(DataError, match=f"first {root}/scratch/fold1/masks/left lung/{JSRT_TRAIN[0]}.gif"):
        JsrtLung().load(tmp_path)


def test_jsrt_metadata() -> None:
    for task in (JsrtLung(), JsrtHeart(), JsrtClavicle()):
        assert (task.modality, task.channels, task.rotation_degrees) == ("cxr", 1, 30.0)
        assert task.label_fractions == XRAY_FRACTIONS
        assert task.expected_counts == (124, 123)
        assert "db.jsrt.or.jp" in task.url


# --- Montgomery and Shenzhen -----------------------------------------------------------------------------

MONTGOMERY_IDS = ("MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0", "MCUCXR_0004_1", "MCUCXR_0005_0")


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def left_half_mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[:, : width // 2] = 255
    return mask


@pytest.fixture
def montgomery_root(tmp_path: Path) -> Path:
    """Five Montgomery cases, 64 wide x 80 high (portrait, like most), left and right lungs drawn apart."""
    root = tmp_path / "MontgomerySet"
    image = np.tile(np.arange(64, dtype=np.uint8) * 4, (80, 1))
    for image_id in MONTGOMERY_IDS:
        write_png(root / "CXR_png" / f"{image_id}.png", image)
        left, right = np.zeros((80, 64), np.uint8), np.zeros((80, 64), np.uint8)
        left[16:64, 8:24], right[16:64, 40:56] = 255, 255
        write_png(root / "ManualMask" / "leftMask" / f"{image_id}.png", left)
        write_png(root / "ManualMask" / "rightMask" / f"{image_id}.png", right)
    (root / "CXR_png" / "Thumbs.db").write_bytes(b"not an image")
    return root


def test_montgomery_ors_left_and_right_masks(montgomery_root: Path) -> None:
    mask = MontgomeryLung().load(montgomery_root.parent).train.masks[0].numpy()
    # Rows 16..64 of 80 and columns 8..24 and 40..56 of 64, scaled to 512 (x 6.4 and x 8).
    assert_boxes(mask, [(slice(102, 410), slice(64, 192)), (slice(102, 410), slice(320, 448))], margin=8)


def test_montgomery_uses_the_seeded_split_of_sorted_ids(montgomery_root: Path) -> None:
    data = MontgomeryLung().load(montgomery_root.parent)
    # Known answer of the documented rule (SHA-256 of "0:<id>"), fixed so that a change cannot pass unseen.
    assert data.train.ids == ("MCUCXR_0002_1", "MCUCXR_0001_0", "MCUCXR_0004_1", "MCUCXR_0003_0")
    assert data.test.ids == ("MCUCXR_0005_0",)


def test_montgomery_missing_right_mask_is_named(montgomery_root: Path) -> None:
    (montgomery_root / "ManualMask" / "rightMask" / "MCUCXR_0003_0.png").unlink()
    assert MontgomeryLung().availability(montgomery_root.parent).ok
    with pytest.raises(DataError, match=r"1 Montgomery file\(s\) missing, first \S*rightMask/MCUCXR_0003_0\.png"):
        MontgomeryLung().load(montgomery_root.parent)


def test_montgomery_corrupt_image_is_a_data_error_naming_it(montgomery_root: Path) -> None:
    (montgomery_root / "CXR_png" / "MCUCXR_0004_1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"MCUCXR_0004_1\.png"):
        MontgomeryLung().load(montgomery_root.parent)


@pytest.mark.parametrize("mask_folder", ["mask", "masks"])
def test_shenzhen_reads_mask_or_masks_and_skips_unlabelled_images(tmp_path: Path, mask_folder: str) -> None:
    root = tmp_path / "ChinaSet_AllFiles"
    for number in range(1, 7):
        write_png(root / "CXR_png" / f"CHNCXR_{number:04d}_0.png", np.full((40, 40), 100, np.uint8))
    for number in range(1, 6):  # the sixth image has no mask in the third-party release
        write_png(root / mask_folder / f"CHNCXR_{number:04d}_0_mask.png", left_half_mask(40, 40))
    write_png(root / "CXR_png" / "MCUCXR_0001_0.png", np.zeros((40, 40), np.uint8))  # as in "Lung Segmentation/"
    data = ShenzhenLung().load(tmp_path)
    ids = {*data.train.ids, *data.test.ids}
    assert ids == {f"CHNCXR_{number:04d}_0" for number in range(1, 6)}
    assert (len(data.train), len(data.test)) == (4, 1)
    assert data.train.masks[0, 256, 100] and not data.train.masks[0, 256, 400]


def test_shenzhen_without_masks_says_which_file_is_missing(tmp_path: Path) -> None:
    for number in range(1, 6):
        write_png(tmp_path / "ChinaSet_AllFiles" / "CXR_png" / f"CHNCXR_{number:04d}_0.png", np.zeros((8, 8), np.uint8))
    assert ShenzhenLung().availability(tmp_path).ok
    with pytest.raises(DataError, match=r"5 Shenzhen file\(s\) missing, first \S*/masks/CHNCXR_000\d_0_mask\.png"):
        ShenzhenLung().load(tmp_path)


def test_cxr_lung_metadata() -> None:
    for task in (MontgomeryLung(), ShenzhenLung()):
        assert (task.modality, task.channels, task.rotation_degrees) == ("cxr", 1, 30.0)
        assert task.label_fractions == XRAY_FRACTIONS
    assert MontgomeryLung().expected_counts == (111, 27)
    assert ShenzhenLung().expected_counts == (453, 113)


# --- The stored LD splits against LD's lists --------------------------------------------------------------


def ld_split_rows(csv_name: str) -> list[tuple[str, str]]:
    """(split, image stem) rows of an ``ld-splits`` csv, in its order."""
    path = shared_data("../docs/ld-splits") / csv_name
    with path.open(newline="") as stream:
        return [(row["split"], Path(row["image"]).stem) for row in csv.DictReader(stream)]


@pytest.mark.parametrize("csv_name", ["lung_SCR.csv", "heart_SCR.csv", "clavicle_SCR.csv"])
def test_jsrt_split_is_lds(csv_name: str) -> None:
    stored = [(split, image_id) for split in ("train", "test") for image_id in jsrt.LD_IDS[split]]
    assert ld_split_rows(csv_name) == stored


def test_scr_lists_put_train_in_fold1_and_test_in_fold2() -> None:
    path = shared_data("../docs/ld-splits") / "lung_SCR.csv"
    with path.open(newline="") as stream:
        folds = {(row["split"], Path(row["label"]).parts[-3]) for row in csv.DictReader(stream)}
    assert folds == {("train", jsrt.SCR_FOLDS["train"]), ("test", jsrt.SCR_FOLDS["test"])}


def test_siim_split_is_lds() -> None:
    stored = [(split, image_id) for split in ("train", "test") for image_id in siim.LD_IDS[split]]
    assert ld_split_rows("Pneumothorax_SIIM.csv") == stored
