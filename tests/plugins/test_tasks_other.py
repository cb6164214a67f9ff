"""Kvasir-SEG, PH2, ISIC 2018 and folder tasks: small files in the owners' layouts, and the real CXR lungs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from PIL import Image
from ssl_bench_tasks._files import image_files, seeded_split, split_counts
from ssl_bench_tasks._folder import FolderSpec, FolderTask
from ssl_bench_tasks.folder import CXR_LUNGS, configured_specs
from ssl_bench_tasks.kvasir import KVASIR_SEG
from ssl_bench_tasks.skin import Isic2018Lesion, Ph2Lesion

from ssl_bench.errors import DataError
from ssl_bench.plugins import get_registry


def save(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def rgb(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def square_mask(size: int, value: int = 255, background: int = 0) -> np.ndarray:
    """A grey ``size`` x ``size`` mask whose middle half (rows and columns) is ``value``."""
    mask = np.full((size, size), background, np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = value
    return mask


def assert_middle_square(mask: np.ndarray) -> None:
    """The 512x512 mask of :func:`square_mask`: set in [128, 384) on both axes, with 8 px for blurred edges."""
    assert mask[136:376, 136:376].all()
    outside = np.ones(mask.shape, bool)
    outside[120:392, 120:392] = False
    assert not mask[outside].any()


def test_dataset_modules_register_their_tasks() -> None:
    names = set(get_registry().tasks)
    assert {
        "jsrt-lung",
        "jsrt-heart",
        "jsrt-clavicle",
        "siim-pneumothorax",
        "montgomery-lung",
        "shenzhen-lung",
        "kvasir-polyp",
        "ph2-lesion",
        "isic2018-lesion",
        "cxr-lungs-folder",
    } <= names


# LD's downstream augmentation per task: (random flips, rotation range in degrees). Its X-ray code has the
# flips commented out and rotates within 30 degrees; its fundus code flips and rotates within 180.
AUGMENTATION = {
    "drive-vessel": (True, 180.0),
    "stare-vessel": (True, 180.0),
    "chase-vessel": (True, 180.0),
    "hrf-vessel": (True, 180.0),
    "drishti-disc": (True, 180.0),
    "drishti-cup": (True, 180.0),
    "idrid-disc": (True, 180.0),
    "idrid-exudates": (True, 180.0),
    "kvasir-polyp": (True, 180.0),
    "ph2-lesion": (True, 180.0),
    "isic2018-lesion": (True, 180.0),
    "synthetic-vessel": (True, 180.0),
    "jsrt-lung": (False, 30.0),
    "jsrt-heart": (False, 30.0),
    "jsrt-clavicle": (False, 30.0),
    "siim-pneumothorax": (False, 30.0),
    "montgomery-lung": (False, 30.0),
    "shenzhen-lung": (False, 30.0),
    "cxr-lungs-folder": (False, 30.0),
    "synthetic-lung": (False, 30.0),
}


@pytest.mark.parametrize(("name", "augmentation"), AUGMENTATION.items())
def test_each_task_flips_and_rotates_as_ld(name: str, augmentation: tuple[bool, float]) -> None:
    task = get_registry().task(name)
    assert (task.flips, task.rotation_degrees) == augmentation


def test_configured_cxr_folder_task_gets_the_x_ray_augmentation() -> None:
    task = FolderTask(FolderSpec(name="my-cxr", folders=("a",), modality="cxr", channels=1))
    assert (task.flips, task.rotation_degrees) == (False, 30.0)
    task = FolderTask(FolderSpec(name="my-scans", folders=("a",), modality="ultrasound", channels=1))
    assert (task.flips, task.rotation_degrees) == (True, 180.0)


# --- The seeded split ----------------------------------------------------------------------------------


def test_seeded_split_known_answer() -> None:
    # SHA-256 of "0:<id>" orders the ids case9, case3 | case2, case1, case8, case6, case10, case5, case4, case7.
    split = seeded_split([f"case{i}" for i in range(1, 11)])
    assert split["test"] == ("case3", "case9")
    assert split["train"] == ("case2", "case1", "case8", "case6", "case10", "case5", "case4", "case7")


def test_seeded_split_is_a_partition_that_ignores_input_order() -> None:
    ids = [f"IMG_{i:04d}" for i in range(137)]
    split = seeded_split(ids)
    assert split == seeded_split(reversed(ids))
    assert sorted(split["train"] + split["test"]) == ids
    assert (len(split["train"]), len(split["test"])) == split_counts(137) == (110, 27)
    assert list(split["test"]) == sorted(split["test"])
    assert list(split["train"]) != sorted(split["train"])  # shuffled, so that its prefixes are random


def test_seeded_split_changes_with_the_seed() -> None:
    ids = [f"IMG_{i:04d}" for i in range(50)]
    assert seeded_split(ids, seed=1)["test"] != seeded_split(ids, seed=0)["test"]


# --- Listing images by extension ------------------------------------------------------------------------


def test_image_files_keep_images_of_any_case_and_ignore_other_files(tmp_path: Path) -> None:
    for name in ("a.PNG", "b.jpg", "c.JPEG", "d.tif", "ATTRIBUTION.txt", "LICENSE.txt", "kavsir_bboxes.json"):
        (tmp_path / name).write_bytes(b"")
    assert sorted(image_files(tmp_path)) == ["a", "b", "c", "d"]


def test_image_files_strip_a_suffix(tmp_path: Path) -> None:
    for name in ("CHNCXR_0001_0_mask.png", "CHNCXR_0002_0.png"):
        (tmp_path / name).write_bytes(b"")
    assert image_files(tmp_path, "_mask") == {"CHNCXR_0001_0": tmp_path / "CHNCXR_0001_0_mask.png"}


def test_two_images_with_one_stem_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.jpg and .*a\.png have the same name"):
        image_files(tmp_path)


# --- Kvasir-SEG -----------------------------------------------------------------------------------------


@pytest.fixture
def kvasir_root(tmp_path: Path) -> Path:
    """Five Kvasir-SEG cases (doubled folder, as some copies unpack) with 3-channel JPEG masks."""
    root = tmp_path / "Kvasir-SEG" / "Kvasir-SEG"
    for index in range(5):
        image_id = f"cju{index}ddr6atz0s07"
        save(root / "images" / f"{image_id}.jpg", rgb(48, 64, (180, 90, 60)), quality=95)
        # A red lesion (230, 20, 20) is grey 83, lost by a grey rule; a green one (20, 230, 20) has red 20,
        # lost by a first-channel rule: only the largest channel (230) keeps both. Background: at most 60.
        mask = rgb(48, 64, (30, 60, 20))
        mask[12:36, 16:48] = (20, 230, 20) if index % 2 else (230, 20, 20)  # the middle half of each axis
        save(root / "masks" / f"{image_id}.jpg", mask, quality=95)
    (root.parent / "kavsir_bboxes.json").write_text("{}")
    return root


def test_kvasir_three_channel_jpeg_masks_are_binarised_on_their_largest_channel(kvasir_root: Path) -> None:
    data = FolderTask(KVASIR_SEG).load(kvasir_root.parents[1])
    assert (len(data.train), len(data.test)) == (4, 1)
    assert tuple(data.train.images.shape) == (4, 3, 512, 512)
    for mask in (*data.train.masks.numpy(), *data.test.masks.numpy()):
        assert_middle_square(mask)


def test_kvasir_image_without_mask_is_named(kvasir_root: Path) -> None:
    (kvasir_root / "masks" / "cju3ddr6atz0s07.jpg").unlink()
    assert FolderTask(KVASIR_SEG).availability(kvasir_root.parents[1]).ok  # found, but incomplete: an error
    with pytest.raises(DataError, match=r"1 Kvasir-SEG file\(s\) missing, first \S*masks/cju3ddr6atz0s07\.png"):
        FolderTask(KVASIR_SEG).load(kvasir_root.parents[1])


def test_kvasir_metadata() -> None:
    task = FolderTask(KVASIR_SEG)
    assert (task.name, task.modality, task.channels, task.rotation_degrees) == ("kvasir-polyp", "endoscopy", 3, 180)
    assert task.label_fractions == (1.0,)
    assert task.expected_counts == (800, 200)
    assert "simula.no" in task.url and "Jha" in task.citation


# --- PH2 --------------------------------------------------------------------------------------------------


@pytest.fixture
def ph2_root(tmp_path: Path) -> Path:
    cases = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    for number in (2, 3, 4, 6, 8):
        name = f"IMD{number:03d}"
        save(cases / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp", rgb(40, 40, (150, 100, 80)))
        save(cases / name / f"{name}_lesion" / f"{name}_lesion.bmp", square_mask(40))
        save(cases / name / f"{name}_roi" / f"{name}_R1_Label4.bmp", square_mask(40))
    (tmp_path / "PH2Dataset" / "PH2_dataset.xlsx").write_bytes(b"not read")
    return tmp_path


def test_ph2_reads_each_case_folder(ph2_root: Path) -> None:
    data = Ph2Lesion().load(ph2_root)
    assert sorted(data.train.ids + data.test.ids) == ["IMD002", "IMD003", "IMD004", "IMD006", "IMD008"]
    assert (len(data.train), len(data.test)) == (4, 1)
    assert_middle_square(data.test.masks[0].numpy())
    assert data.test.images[0, :, 256, 256].tolist() == [150, 100, 80]


def test_ph2_missing_lesion_mask_is_named(ph2_root: Path) -> None:
    lesion = ph2_root / "PH2Dataset" / "PH2 Dataset images" / "IMD004" / "IMD004_lesion" / "IMD004_lesion.bmp"
    lesion.unlink()
    assert Ph2Lesion().availability(ph2_root).ok
    with pytest.raises(DataError, match=rf"first {lesion}"):
        Ph2Lesion().load(ph2_root)


def test_ph2_corrupt_image_is_a_data_error_naming_it(ph2_root: Path) -> None:
    image = ph2_root / "PH2Dataset" / "PH2 Dataset images" / "IMD006" / "IMD006_Dermoscopic_Image" / "IMD006.bmp"
    image.write_bytes(b"BM broken")
    with pytest.raises(DataError, match=r"IMD006\.bmp"):
        Ph2Lesion().load(ph2_root)


# --- ISIC 2018 task 1 -------------------------------------------------------------------------------------


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    root = tmp_path / "ISIC2018"
    for split, numbers in (("Training", range(6)), ("Test", (36, 37))):
        inputs, truths = root / f"ISIC2018_Task1-2_{split}_Input", root / f"ISIC2018_Task1_{split}_GroundTruth"
        for number in numbers:
            image_id = f"ISIC_{number:07d}"
            save(inputs / f"{image_id}.jpg", rgb(32, 32, (200, 150, 120)))
            save(inputs / f"{image_id}_superpixels.png", rgb(32, 32, (1, 2, 3)))  # task 2's, not an image
            save(truths / f"{image_id}_segmentation.png", square_mask(32))
        for folder in (inputs, truths):
            (folder / "ATTRIBUTION.txt").write_text("ISIC archive")
            (folder / "LICENSE.txt").write_text("CC BY-NC")
    return tmp_path


def test_isic_official_split_ignores_text_files_and_superpixels(isic_root: Path) -> None:
    data = Isic2018Lesion().load(isic_root)
    assert sorted(data.train.ids) == [f"ISIC_{n:07d}" for n in range(6)]
    assert data.test.ids == ("ISIC_0000036", "ISIC_0000037")
    assert data.train.ids != tuple(sorted(data.train.ids))  # shuffled by the seeded order
    assert_middle_square(data.test.masks[1].numpy())


def test_isic_without_the_test_set_says_what_is_missing(isic_root: Path) -> None:
    for path in (isic_root / "ISIC2018" / "ISIC2018_Task1_Test_GroundTruth").iterdir():
        path.unlink()
    (isic_root / "ISIC2018" / "ISIC2018_Task1_Test_GroundTruth").rmdir()
    assert Isic2018Lesion().availability(isic_root).ok  # ISIC2018/ is there: incomplete, not absent
    with pytest.raises(DataError, match=r"ISIC2018/ISIC2018_Task1_Test_GroundTruth; .*isic-archive\.com"):
        Isic2018Lesion().load(isic_root)


def test_skin_metadata() -> None:
    for task in (Ph2Lesion(), Isic2018Lesion()):
        assert (task.modality, task.channels, task.rotation_degrees) == ("dermoscopy", 3, 180.0)
        assert task.url and task.licence and task.citation
    assert Ph2Lesion().expected_counts == (160, 40)
    assert Isic2018Lesion().expected_counts == (2594, 1000)


# --- Folder tasks ----------------------------------------------------------------------------------------


def test_real_cxr_lungs_are_a_folder_task() -> None:
    data_root = shared_data("CXR_lungs_512").parent
    task = get_registry().task("cxr-lungs-folder")
    assert task.availability(data_root).ok
    data = task.load(data_root)
    assert (len(data.train), len(data.test)) == (48, 12)
    assert tuple(data.train.images.shape) == (48, 1, 512, 512)
    ids = data.train.ids + data.test.ids
    assert sum(i.startswith("MCUCXR_") for i in ids) == 30 and sum(i.startswith("CHNCXR_") for i in ids) == 30
    lung_fraction = [float(mask.float().mean()) for mask in (*data.train.masks, *data.test.masks)]
    assert min(lung_fraction) > 0.10 and max(lung_fraction) < 0.45  # lungs fill about a quarter of a CXR
    assert (task.modality, task.channels, task.label_fractions) == ("cxr", 1, (0.2, 0.4, 0.6, 0.8, 1.0))


def test_real_cxr_masks_are_binarised_above_127() -> None:
    folder = shared_data("CXR_lungs_512")
    mask_file = sorted((folder / "masks").iterdir())[0]
    grey = np.asarray(Image.open(mask_file).convert("L"))
    data = FolderTask(CXR_LUNGS).load(folder.parent)
    index = (data.train.ids + data.test.ids).index(mask_file.stem)
    masks = np.concatenate([data.train.masks.numpy(), data.test.masks.numpy()])
    np.testing.assert_array_equal(masks[index], grey > 127)  # already 512x512: nothing is resized


def write_folder(root: Path, names: list[str], mask_suffix: str = "") -> Path:
    for name in names:
        save(root / "images" / f"{name}.png", np.full((32, 32), 90, np.uint8))
        save(root / "masks" / f"{name}{mask_suffix}.gif", square_mask(32, value=200, background=30))
    (root / "images" / "README.txt").write_text("ignored")
    return root


def read_folder_mask(path: Path, array: np.ndarray) -> np.ndarray:
    return FolderTask(FolderSpec(name="x", folders=("a",), modality="cxr", channels=1)).read_label_file(
        save(path, array)
    )


def test_folder_mask_drawn_red_is_binarised_on_its_largest_channel(tmp_path: Path) -> None:
    red = np.zeros((2, 3, 3), np.uint8)
    red[0, :2] = (255, 0, 0)  # grey 76: a grey rule at > 127 would lose it
    red[1, 0] = (0, 0, 200)
    red[1, 1] = (90, 40, 120)  # largest channel 120: background
    np.testing.assert_array_equal(
        read_folder_mask(tmp_path / "red.png", red), [[True, True, False], [True, False, False]]
    )


def test_folder_mask_stored_as_zero_one_is_read_as_such(tmp_path: Path) -> None:
    zero_one = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)  # its maximum is 1: a {0, 1} mask
    np.testing.assert_array_equal(
        read_folder_mask(tmp_path / "01.png", zero_one), [[False, True, True], [True, False, False]]
    )
    # A mask whose maximum is 255 is {0, 255}: low values such as 1 are JPEG noise, not foreground.
    noisy = np.array([[0, 1, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(read_folder_mask(tmp_path / "noisy.png", noisy), [[False, False, False, True, True]])


def test_configured_folder_task_is_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "data" / "my_scans", ["s1", "s2", "s3", "s4", "s5"], mask_suffix="_mask")
    config = tmp_path / "folders.toml"
    config.write_text(
        '[folder_tasks.my-scans]\nfolder = "my_scans"\nmodality = "ultrasound"\nchannels = 1\n'
        'target = "nodules"\nmask_suffix = "_mask"\n'
    )
    monkeypatch.setenv("SSL_BENCH_FOLDER_TASKS", str(config))
    task = get_registry().task("my-scans")
    assert (task.modality, task.channels, task.target, task.rotation_degrees) == ("ultrasound", 1, "nodules", 180.0)
    data = task.load(tmp_path / "data")
    assert (len(data.train), len(data.test)) == (4, 1)
    assert_middle_square(data.test.masks[0].numpy())  # grey 200 is lesion, 30 background
    assert get_registry().task("cxr-lungs-folder")  # the default stays


def test_folder_task_version_follows_what_shapes_its_data() -> None:
    base = FolderSpec(name="x", folders=("a",), modality="cxr", channels=1)
    same = FolderSpec(name="x", folders=("a",), modality="cxr", channels=1, description="other words")
    assert FolderTask(base).version == FolderTask(same).version
    for changed in (
        FolderSpec(name="x", folders=("b",), modality="cxr", channels=1),
        FolderSpec(name="x", folders=("a",), modality="cxr", channels=3),
        FolderSpec(name="x", folders=("a",), modality="cxr", channels=1, mask_suffix="_mask"),
    ):
        assert FolderTask(changed).version != FolderTask(base).version


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('folder = "a"\nmodality = "cxr"\n', r"missing \['channels'\]"),
        ('folder = "a"\nmodality = "cxr"\nchannels = 2\n', "channels must be 1 or 3"),
        ('folder = "a"\nmodality = "cxr"\nchannels = 1\ncolour = "red"\n', r"unknown \['colour'\]"),
        ('folder = "a"\nmodality = 7\nchannels = 1\n', "modality must be text"),
    ],
)
def test_bad_folder_config_names_the_table(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "folders.toml"
    config.write_text(f"[folder_tasks.my-task]\n{table}")
    with pytest.raises(DataError, match=rf"folders\.toml \[folder_tasks\.my-task\]: .*{message}"):
        configured_specs(config)


def test_bad_folder_task_name_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "folders.toml"
    config.write_text('[folder_tasks."My Task"]\nfolder = "a"\nmodality = "cxr"\nchannels = 1\n')
    with pytest.raises(DataError, match="lower-case letters, digits and hyphens"):
        configured_specs(config)


def test_folder_task_availability_reasons(tmp_path: Path) -> None:
    task = FolderTask(FolderSpec(name="scans", folders=("scans",), modality="cxr", channels=1))
    assert "no data folder given" in task.availability(None).reason
    assert "holds images and masks" in task.availability(tmp_path).reason
    write_folder(tmp_path / "scans", ["a", "b", "c", "d", "e"])
    assert task.availability(tmp_path).ok
    save(tmp_path / "scans" / "images" / "a.jpg", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="have the same name"):
        task.load(tmp_path)
