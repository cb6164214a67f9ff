"""The fundus tasks (STARE, CHASE_DB1, HRF, Drishti-GS1, IDRiD; DRIVE's split) and their shared base.

Datasets that are not in ../shared/data are tested on 40x30 files written here in the owners' formats and
layouts, with known answers written out by hand; CHASE_DB1 also on its real copy.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_data
from PIL import Image
from ssl_bench_tasks._prepared import SPLITS, Preparation, PreparedTask, Sample
from ssl_bench_tasks.chase import ChaseVessel
from ssl_bench_tasks.drishti import DrishtiCup, DrishtiDisc
from ssl_bench_tasks.drive import DriveVessel
from ssl_bench_tasks.hrf import HrfVessel
from ssl_bench_tasks.idrid import IdridDisc, IdridExudates
from ssl_bench_tasks.stare import StareVessel
from typer.testing import CliRunner

from ssl_bench.check import check_plugin
from ssl_bench.cli import app
from ssl_bench.errors import DataError
from ssl_bench.plugins import get_registry

LD_SPLITS = REPO.parent / "shared" / "docs" / "ld-splits"
WIDTH, HEIGHT = 40, 30
# The fake images are bright everywhere, so LD's ROI box is the whole frame and only the resize to 512
# acts. A label that is 255 on columns 0-19 of 40 (or rows 0-14 of 30) and 0 beyond: bilinear output
# column j samples x = (j + 0.5) * 40 / 512 - 0.5; the value exceeds 0.3 * 255 while x < 19.7, i.e. for
# j <= 258 (rows: y = (i + 0.5) * 30 / 512 - 0.5 < 14.7, i.e. i <= 258). So 259 of the 512 stay set.
HALF = 259
# HRF keeps a resized mask where it exceeds 0.01 * 255, while x < 19.99: j <= 261, so 262 columns. Columns
# 259-261 (values 58, 38, 18) lie between the two thresholds.
HRF_HALF = 262
FUNDUS_COLOUR = (150, 80, 40)


def ld_split_rows(csv_name: str) -> list[tuple[str, str]]:
    """(split, image stem) rows of an LD split list; skips when the docs are absent, except under CI=true."""
    path = LD_SPLITS / f"{csv_name}.csv"
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing, and CI must have ../shared/docs")
        pytest.skip(f"{path} is absent (the shared docs beside the repo); nothing to compare with")
    with path.open(newline="") as file:
        return [(row["split"], Path(row["image"]).stem) for row in csv.DictReader(file)]


def fundus_image() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), FUNDUS_COLOUR, np.uint8)


def left_half(inside: int, outside: int = 0) -> np.ndarray:
    label = np.full((HEIGHT, WIDTH), outside, np.uint8)
    label[:, : WIDTH // 2] = inside
    return label


def top_half(inside: int, outside: int = 0) -> np.ndarray:
    label = np.full((HEIGHT, WIDTH), outside, np.uint8)
    label[: HEIGHT // 2] = inside
    return label


def red(mask: np.ndarray) -> np.ndarray:
    """A mask drawn red on black, as an RGB array."""
    return np.stack([mask, np.zeros_like(mask), np.zeros_like(mask)], axis=2)


def save(array: np.ndarray, path: Path, mode: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **options)
    return path


def save_gzipped(array: np.ndarray, path: Path) -> Path:
    """A PPM file gzipped to ``path`` (``....ppm.gz``), as STARE's owners ship them."""
    plain = save(array, path.with_suffix(""))
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    return path


def expect_left_half(masks) -> None:
    assert bool(masks[:, :, :HALF].all()) and not bool(masks[:, :, HALF:].any())


def expect_top_half(masks) -> None:
    assert bool(masks[:, :HALF].all()) and not bool(masks[:, HALF:].any())


# ------------------------------------------------------------------------------------------------------
# Owners' layouts, written without the tasks' own path logic


STARE_TRAIN = ("im0001", "im0002", "im0003", "im0004", "im0005", "im0044", "im0077", "im0081", "im0082", "im0139")
STARE_TEST = ("im0162", "im0163", "im0235", "im0236", "im0239", "im0240", "im0255", "im0291", "im0319", "im0324")


def write_stare(root: Path) -> Path:
    """Every other file gzipped. Labels: channel 0 is 128 (vessel) on the left half and 127 (not) on the
    right, where the other channels are 255: only channel 0 may decide."""
    label = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    label[:, : WIDTH // 2] = (128, 0, 0)
    label[:, WIDTH // 2 :] = (127, 255, 255)
    for index, image_id in enumerate(STARE_TRAIN + STARE_TEST):
        if index % 2:
            save(fundus_image(), root / "stare-images" / f"{image_id}.ppm")
            save(label, root / "labels-ah" / f"{image_id}.ah.ppm")
        else:
            save_gzipped(fundus_image(), root / "stare-images" / f"{image_id}.ppm.gz")
            save_gzipped(label, root / "labels-ah" / f"{image_id}.ah.ppm.gz")
    return root


def write_chase(root: Path) -> Path:
    """The flat folder: JPEG images and 1-bit PNG labels (vessels on the left half)."""
    for child in range(1, 15):
        for eye in "LR":
            save(fundus_image(), root / f"Image_{child:02d}{eye}.jpg", quality=95)
            save(left_half(255), root / f"Image_{child:02d}{eye}_1stHO.png", mode="1")
    return root


def write_hrf(root: Path) -> Path:
    """``_dr`` images with an upper-case ``.JPG``, the others ``.jpg``; ``manual1`` TIFF labels."""
    for patient in range(1, 16):
        for condition in ("dr", "g", "h"):
            extension = "JPG" if condition == "dr" else "jpg"
            save(fundus_image(), root / "images" / f"{patient:02d}_{condition}.{extension}", format="JPEG")
            save(left_half(255), root / "manual1" / f"{patient:02d}_{condition}.tif")
    return root


DRISHTI_TRAIN = {2, 4, 8, 10, 12, 15, 16, 17, 18, 22, 24, 26, 31, 32, 33, 35, 36, 37, 38, 40, 41, 42, 44, 45, 46}
DRISHTI_TRAIN |= {47, 49, 51, 57, 58, 60, 61, 62, 63, 64, 66, 68, 69, 75, 76, 80, 81, 84, 88, 89, 90, 92, 94, 98, 101}


def write_drishti(data_root: Path) -> Path:
    """The doubled ``Drishti-GS1_files/Drishti-GS1_files`` layout. Disc soft maps: 191 (3 of 4 annotators)
    on the left half, 127 elsewhere; cup soft maps: 128 on the top half, 64 elsewhere."""
    root = data_root / "Drishti-GS1_files" / "Drishti-GS1_files"
    for number in range(1, 102):
        image_id = f"drishtiGS_{number:03d}"
        folder, ground_truth = ("Training", "GT") if number in DRISHTI_TRAIN else ("Test", "Test_GT")
        save(fundus_image(), root / folder / "Images" / f"{image_id}.png")
        soft_maps = root / folder / ground_truth / image_id / "SoftMap"
        save(left_half(191, 127), soft_maps / f"{image_id}_ODsegSoftmap.png")
        save(top_half(128, 64), soft_maps / f"{image_id}_cupsegSoftmap.png")
    return root


IDRID_GROUND_TRUTHS = Path("A. Segmentation") / "2. All Segmentation Groundtruths"
IDRID_WITHOUT_EXUDATES = (3, 60)


def write_idrid(root: Path) -> Path:
    """RGB TIFF masks drawn red on black: optic disc on the left half, exudates on the top half; images 03
    and 60 have no exudate file."""
    for number in range(1, 82):
        image_id = f"IDRiD_{number:02d}"
        subset = "a. Training Set" if number <= 54 else "b. Testing Set"
        save(fundus_image(), root / "A. Segmentation" / "1. Original Images" / subset / f"{image_id}.jpg")
        masks = root / IDRID_GROUND_TRUTHS / subset
        save(red(left_half(255)), masks / "5. Optic Disc" / f"{image_id}_OD.tif")
        if number not in IDRID_WITHOUT_EXUDATES:
            save(red(top_half(255)), masks / "3. Hard Exudates" / f"{image_id}_EX.tif")
    return root


# ------------------------------------------------------------------------------------------------------
# Splits


@pytest.mark.parametrize(
    ("task", "csv_name"),
    [
        (DriveVessel(), "Vessel_RITE"),
        (StareVessel(), "Vessel_STARE"),
        (ChaseVessel(), "Vessel_CHASEDB"),
        (HrfVessel(), "Vessel_HRF"),
        (DrishtiDisc(), "OD_Drishti-GS1"),
        (DrishtiCup(), "CUP_Drishti-GS1"),
        (IdridDisc(), "OD_IDRID"),
        (IdridExudates(), "Hard_Exudates_IDRID"),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_split_membership_and_order_match_ld(task: PreparedTask, csv_name: str, tmp_path: Path) -> None:
    listed = [(split, sample.id) for split in SPLITS for sample in task.samples(tmp_path, split)]
    assert listed == ld_split_rows(csv_name)
    assert tuple(len(task.samples(tmp_path, split)) for split in SPLITS) == task.expected_counts


# ------------------------------------------------------------------------------------------------------
# Each dataset in its owners' layout


def test_stare_reads_plain_and_gzipped_ppm_and_thresholds_channel_zero(tmp_path: Path) -> None:
    data = StareVessel().load(write_stare(tmp_path / "STARE"))
    assert (data.train.ids, data.test.ids) == (STARE_TRAIN, STARE_TEST)
    assert data.train.images.shape == (10, 3, 512, 512)
    assert data.train.images[0, :, 256, 256].tolist() == list(FUNDUS_COLOUR)
    expect_left_half(data.train.masks)
    expect_left_half(data.test.masks)


def test_stare_gzipped_file_with_a_broken_image_is_named(tmp_path: Path) -> None:
    root = write_stare(tmp_path / "STARE")
    broken = root / "stare-images" / "im0005.ppm.gz"
    broken.write_bytes(gzip.compress(b"P6\n40 30\n255\n" + bytes(100)))
    with pytest.raises(DataError) as caught:
        StareVessel().load(tmp_path)
    assert f"{broken} is not a readable image" in str(caught.value)
    assert "ssl-bench-" not in str(caught.value)  # the temporary copy is not what the user must fix


def test_chase_reads_the_flat_folder_with_one_bit_labels(tmp_path: Path) -> None:
    data = ChaseVessel().load(write_chase(tmp_path / "CHASE_DB1"))
    assert (len(data.train), len(data.test)) == (20, 8)
    assert data.test.ids == ("Image_11L", "Image_11R", "Image_12L", "Image_12R", *data.test.ids[4:])
    expect_left_half(data.test.masks)


def test_hrf_matches_image_extensions_without_case(tmp_path: Path) -> None:
    root = write_hrf(tmp_path / "HRF")
    (root / "images" / "02_g.jpg").rename(root / "images" / "02_g.Jpg")
    data = HrfVessel().load(tmp_path)
    assert (len(data.train), len(data.test)) == (25, 20)
    assert data.train.ids[:3] == ("07_g", "01_dr", "01_g") and data.test.ids[:3] == ("09_g", "09_h", "10_dr")


def test_hrf_masks_are_rebinarised_at_0_01_after_the_resize(tmp_path: Path) -> None:
    # The same left-half label: CHASE_DB1 (0.3 * 255) stops at HALF columns, HRF (0.01 * 255) at HRF_HALF.
    expect_left_half(ChaseVessel().load(write_chase(tmp_path / "CHASE_DB1")).test.masks)
    masks = HrfVessel().load(write_hrf(tmp_path / "HRF")).test.masks
    assert bool(masks[:, :, :HRF_HALF].all()) and not bool(masks[:, :, HRF_HALF:].any())


def test_drishti_soft_map_binarised_above_127(tmp_path: Path) -> None:
    soft_map = np.array([[0, 63, 64, 127], [128, 191, 192, 255]], np.uint8)
    expected = np.array([[False, False, False, False], [True, True, True, True]])
    path = save(soft_map, tmp_path / "drishtiGS_002_ODsegSoftmap.png")
    np.testing.assert_array_equal(DrishtiDisc().read_label_file(path), expected)


def test_drishti_disc_and_cup_from_the_doubled_layout(tmp_path: Path) -> None:
    write_drishti(tmp_path)
    disc, cup = DrishtiDisc().load(tmp_path), DrishtiCup().load(tmp_path)
    assert (len(disc.train), len(disc.test)) == (50, 51)
    assert disc.train.ids[0] == "drishtiGS_036" and disc.test.ids[:2] == ("drishtiGS_029", "drishtiGS_072")
    expect_left_half(disc.test.masks)
    expect_top_half(cup.train.masks)
    # The disc's centre is the landmark: the centroid of columns 0 to HALF - 1 of every row.
    side = disc.test.masks.shape[-1]
    assert disc.test.landmarks.shape == (51, 1, 2) and cup.train.landmarks is None
    assert disc.test.landmarks[:, 0].tolist() == [[(side - 1) / 2, (HALF - 1) / 2]] * 51


def test_idrid_missing_exudate_file_gives_an_empty_mask(tmp_path: Path) -> None:
    write_idrid(tmp_path / "IDRiD")
    assert IdridExudates().availability(tmp_path).ok
    exudates, disc = IdridExudates().load(tmp_path), IdridDisc().load(tmp_path)
    assert exudates.train.ids[:3] == ("IDRiD_18", "IDRiD_36", "IDRiD_01")
    without = {"IDRiD_03", "IDRiD_60"}
    for split in (exudates.train, exudates.test):
        for image_id, mask in zip(split.ids, split.masks, strict=True):
            assert bool(mask.any()) == (image_id not in without)
            if image_id not in without:
                expect_top_half(mask[None])
    expect_left_half(disc.train.masks)
    expect_left_half(disc.test.masks)


def test_idrid_without_any_exudate_file_is_an_error(tmp_path: Path) -> None:
    root = write_idrid(tmp_path)
    for path in (root / IDRID_GROUND_TRUTHS).glob("*/3. Hard Exudates/*.tif"):
        path.unlink()
    assert IdridExudates().availability(tmp_path).ok  # the dataset is there, but incomplete
    with pytest.raises(DataError, match=r"81 IDRiD file\(s\) missing, first .*IDRiD_18_EX\.tif"):
        IdridExudates().load(tmp_path)
    assert len(IdridDisc().load(tmp_path).train) == 54


# ------------------------------------------------------------------------------------------------------
# Availability and errors, for every dataset

Writer = Callable[[Path], Path]
DATASETS = [
    pytest.param(StareVessel(), lambda root: write_stare(root / "STARE"), "stare-images/im0077.ppm.gz", id="stare"),
    pytest.param(ChaseVessel(), lambda root: write_chase(root / "CHASE_DB1"), "Image_13R.jpg", id="chase"),
    pytest.param(HrfVessel(), lambda root: write_hrf(root / "HRF"), "images/04_h.jpg", id="hrf"),
    pytest.param(DrishtiCup(), write_drishti, "Test/Images/drishtiGS_072.png", id="drishti"),
    pytest.param(
        IdridDisc(), lambda root: write_idrid(root / "IDRiD"), "A. Segmentation/1. Original Images/b. Testing "
        "Set/IDRiD_70.jpg", id="idrid",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("task", "write", "image"), DATASETS)
def test_availability_without_a_folder_or_an_empty_one(task: PreparedTask, write: Writer, image: str, tmp_path):
    without = task.availability(None)
    assert not without.ok and "no data folder" in without.reason and task.url in without.reason
    empty = task.availability(tmp_path)
    assert not empty.ok and f"{task.dataset} not found" in empty.reason
    assert str(tmp_path / task.root_candidates[0]) in empty.reason and task.url in empty.reason
    with pytest.raises(DataError, match="not found"):
        task.load(tmp_path)


@pytest.mark.parametrize(("task", "write", "image"), DATASETS)
def test_a_missing_file_is_an_error_naming_it(task: PreparedTask, write: Writer, image: str, tmp_path: Path) -> None:
    root = write(tmp_path)
    (root / image).unlink()
    assert task.availability(tmp_path).ok  # found, but incomplete: an error, not a dataset to skip
    with pytest.raises(DataError) as caught:
        task.load(tmp_path)
    assert f"1 {task.dataset} file(s) missing, first {root / image}" in str(caught.value)
    assert task.url in str(caught.value)


@pytest.mark.parametrize(("task", "write", "image"), DATASETS)
def test_corrupt_image_is_named(task: PreparedTask, write: Writer, image: str, tmp_path: Path) -> None:
    broken = write(tmp_path) / image
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError) as caught:
        task.load(tmp_path)
    # "is not a readable image", or "gzip file" for STARE's gzipped PPM
    assert f"{broken} is not a readable " in str(caught.value) and task.url in str(caught.value)


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    broken = write_stare(tmp_path / "STARE") / "labels-ah" / "im0082.ah.ppm.gz"
    broken.write_bytes(broken.read_bytes()[:30])
    with pytest.raises(DataError, match=f"{broken} is not a readable gzip file"):
        StareVessel().load(tmp_path)


def test_label_of_another_size_is_named(tmp_path: Path) -> None:
    root = write_chase(tmp_path)
    label = save(np.zeros((HEIGHT, WIDTH + 1), np.uint8), root / "Image_07L_1stHO.png")
    with pytest.raises(DataError, match=f"{label} is 41x30 but its image .*Image_07L.jpg is 40x30"):
        ChaseVessel().load(tmp_path)


# ------------------------------------------------------------------------------------------------------
# The base's general options, as the X-ray tasks use them


class TinyGrey(PreparedTask):
    """Grey 4x4 images, each with a left and a right label file that are merged."""

    name = "tiny-grey"
    description = "test"
    modality = "cxr"
    channels = 1
    target = "both sides"
    url = "https://example.org/tiny"
    dataset = "Tiny"
    root_markers = ("images",)
    preparation = Preparation(size=4)

    def samples(self, root: Path, split: str) -> list[Sample]:
        image_id = f"{split}-1"
        labels = tuple(root / side / f"{image_id}.png" for side in ("left", "right"))
        return [Sample(image_id, root / "images" / f"{image_id}.png", labels)]


def write_tiny(root: Path, label_side: int = 4) -> Path:
    image = np.tile(np.array([10, 20, 30, 50], np.uint8), (4, 1))
    for split in SPLITS:
        save(image, root / "images" / f"{split}-1.png")
        for side, columns in (("left", slice(0, label_side // 4)), ("right", slice(3 * label_side // 4, None))):
            label = np.zeros((label_side, label_side), np.uint8)
            label[:, columns] = 255
            save(label, root / side / f"{split}-1.png")
    return root


@pytest.mark.parametrize(
    ("preparation", "row"),
    [
        (Preparation(size=4), [10, 20, 30, 50]),
        (Preparation(size=4, invert=True), [245, 235, 225, 205]),
        (Preparation(size=4, min_max=True), [0, 64, 128, 255]),  # (v - 10) * 255 / 40, rounded half to even
        (Preparation(size=4, invert=True, min_max=True), [255, 191, 128, 0]),
    ],
)
def test_grey_intensity_options_and_merged_labels(preparation: Preparation, row: list[int], tmp_path, monkeypatch):
    monkeypatch.setattr(TinyGrey, "preparation", preparation)
    data = TinyGrey().load(write_tiny(tmp_path))
    assert data.train.images.shape == (1, 1, 4, 4)
    assert data.train.images[0, 0].tolist() == [row] * 4
    assert data.test.masks[0].tolist() == [[True, False, False, True]] * 4


def test_labels_of_their_own_size_are_resized_when_allowed(tmp_path: Path, monkeypatch) -> None:
    root = write_tiny(tmp_path, label_side=8)
    with pytest.raises(DataError, match="is 8x8 but its image"):
        TinyGrey().load(root)
    monkeypatch.setattr(TinyGrey, "preparation", Preparation(size=4, label_size_may_differ=True))
    # Labels 8x8 with columns 0-1 and 6-7 set: shrunk to 4 columns, the outer ones stay set.
    assert TinyGrey().load(root).train.masks[0].tolist() == [[True, False, False, True]] * 4


def test_fundus_crop_cannot_go_with_labels_of_another_size() -> None:
    with pytest.raises(ValueError, match="fundus_crop"):
        Preparation(fundus_crop=True, label_size_may_differ=True)


# ------------------------------------------------------------------------------------------------------
# Registration and the real CHASE_DB1


FUNDUS_TASKS = {
    "drive-vessel": (20, 20),
    "stare-vessel": (10, 10),
    "chase-vessel": (20, 8),
    "hrf-vessel": (25, 20),
    "drishti-disc": (50, 51),
    "drishti-cup": (50, 51),
    "idrid-disc": (54, 27),
    "idrid-exudates": (54, 27),
}


def test_entry_points_register_every_fundus_task_with_metadata() -> None:
    tasks = get_registry().tasks
    for name, counts in FUNDUS_TASKS.items():
        task = tasks[name]
        assert (task.modality, task.channels, task.rotation_degrees, task.expected_counts) == (
            "fundus",
            3,
            180,
            counts,
        )
        assert task.url.startswith("http") and task.licence and task.citation and task.target


@pytest.fixture(scope="module")
def real_chase():
    return ChaseVessel().load(shared_data("CHASE_DB1").parent)


def test_real_chase_follows_ld(real_chase) -> None:
    assert real_chase.train.ids == tuple(f"Image_{child:02d}{eye}" for child in range(1, 11) for eye in "LR")
    assert real_chase.test.ids == tuple(f"Image_{child:02d}{eye}" for child in range(11, 15) for eye in "LR")
    for split, count in ((real_chase.train, 20), (real_chase.test, 8)):
        assert split.images.shape == (count, 3, 512, 512) and split.masks.shape == (count, 512, 512)


def test_real_chase_vessel_fraction_and_crop_are_plausible(real_chase) -> None:
    # Vessels cover 6-10% of each cropped CHASE_DB1 image (the first observer draws thick vessels).
    for split in (real_chase.train, real_chase.test):
        fractions = split.masks.float().mean(dim=(1, 2))
        assert 0.06 < float(fractions.mean()) < 0.10
        assert float(fractions.min()) > 0.05 and float(fractions.max()) < 0.12
        assert float(split.images[:, :, 236:276, 236:276].float().mean()) > 60
        assert float(split.images[:, :, :8, :8].float().mean()) < 20


def test_real_chase_is_found_from_its_own_folder() -> None:
    assert ChaseVessel().availability(shared_data("CHASE_DB1")).ok


def test_check_chase_says_plainly_that_nothing_was_tested_without_its_data() -> None:
    result = CliRunner().invoke(app, ["check", "chase"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "PASS  task chase-vessel: metadata" in result.output
    assert "NOT TESTED  task chase-vessel: load and protocols: nothing was tested" in result.output
    assert "0 failed, 1 not tested" in result.output


def test_check_chase_passes_from_the_command_line_on_the_real_data() -> None:
    root = shared_data("CHASE_DB1").parent
    result = CliRunner().invoke(app, ["check", "chase", "--data-root", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "PASS  task chase-vessel: a tiny frozen run" in result.output
    assert "PASS  task chase-vessel: a tiny clustering run" in result.output
    assert "0 failed, 0 not tested" in result.output


def test_check_chase_on_the_real_data() -> None:
    items = check_plugin(get_registry(), "chase", data_root=shared_data("CHASE_DB1").parent)
    assert all(item.status == "pass" for item in items), items
    load = next(item for item in items if item.name == "task chase-vessel: load")
    assert load.detail == "20 train, 8 test images"
