"""The DRIVE task: on the real data when present, and on small files in the owners' layout."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ssl_bench_tasks.drive import DriveVessel, ssl_bench_register_tasks

from ssl_bench.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared"
REAL_DRIVE = SHARED / "data" / "DRIVE"
TRAIN_IDS = tuple(str(i) for i in range(21, 41))
TEST_IDS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", *(str(i) for i in range(10, 21)))


def require_real_drive() -> None:
    if REAL_DRIVE.is_dir():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have the real DRIVE copy at {REAL_DRIVE}")
    pytest.skip(f"real DRIVE data not found at {REAL_DRIVE} (it lives beside the project, not in it)")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real DRIVE loaded twice into a fresh cache: once prepared, once from the cache."""
    require_real_drive()
    cache = tmp_path_factory.mktemp("cache")
    task = DriveVessel()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_BENCH_CACHE", str(cache))
        start = time.perf_counter()
        first = task.load(REAL_DRIVE.parent)
        middle = time.perf_counter()
        second = task.load(REAL_DRIVE.parent)
        end = time.perf_counter()
    return {"first": first, "second": second, "times": (middle - start, end - middle), "cache": cache}


def test_real_data_is_available_from_the_parent_or_the_folder() -> None:
    require_real_drive()
    assert DriveVessel().availability(REAL_DRIVE.parent).ok
    assert DriveVessel().availability(REAL_DRIVE).ok


def test_real_split_follows_ld(real: dict) -> None:
    data = real["first"]
    assert (len(data.train), len(data.test)) == (20, 20)
    assert data.train.ids == TRAIN_IDS
    assert data.test.ids == TEST_IDS


def test_ids_match_the_ld_csv(real: dict) -> None:
    path = SHARED / "docs" / "ld-splits" / "Vessel_RITE.csv"
    if not path.is_file():
        pytest.skip(f"LD split list not found at {path}")
    with path.open(newline="") as file:
        rows = [(row["split"], Path(row["image"]).stem) for row in csv.DictReader(file)]
    data = real["first"]
    assert rows == [("train", i) for i in data.train.ids] + [("test", i) for i in data.test.ids]


def test_real_shapes_and_types(real: dict) -> None:
    for split in (real["first"].train, real["first"].test):
        assert split.images.shape == (20, 3, 512, 512)
        assert split.images.dtype == torch.uint8
        assert split.masks.shape == (20, 512, 512)
        assert split.masks.dtype == torch.bool


def test_real_vessel_fraction_is_plausible(real: dict) -> None:
    # Vessels cover about 9% of a DRIVE image; the ROI crop removes some background.
    for split in (real["first"].train, real["first"].test):
        fractions = split.masks.float().mean(dim=(1, 2))
        assert 0.08 < float(fractions.mean()) < 0.15
        assert float(fractions.min()) > 0.05 and float(fractions.max()) < 0.2


def test_real_images_are_cropped_fundus(real: dict) -> None:
    images = real["first"].train.images.float()
    # The fundus fills the centre; LD's box leaves only corners of black background.
    assert float(images[:, :, 236:276, 236:276].mean()) > 40
    assert float(images[:, :, :8, :8].mean()) < 20


def test_second_load_comes_from_the_cache(real: dict) -> None:
    first_time, second_time = real["times"]
    assert second_time < first_time / 4
    assert len(list((real["cache"] / "prepared").glob("drive-vessel-*.npz"))) == 1
    for a, b in ((real["first"].train, real["second"].train), (real["first"].test, real["second"].test)):
        assert bool((a.images == b.images).all()) and bool((a.masks == b.masks).all())
        assert a.ids == b.ids


def write_fake_drive(root: Path, test_labels: bool = True) -> Path:
    """The owners' layout with 96x96 images: a bright fundus on black, vessels on its left half."""
    image = np.zeros((96, 96, 3), np.uint8)
    image[32:64, 24:72] = (150, 80, 40)  # ROI box (32 - 16, 64 + 16, 24 - 16, 72 + 16) = (16, 80, 8, 88)
    label = np.zeros((96, 96), np.uint8)
    label[:, 8:48] = 255  # the left 40 of the box's 80 columns
    for folder, ids in (("training", TRAIN_IDS), ("test", TEST_IDS)):
        for sub in ("images", "1st_manual"):
            (root / folder / sub).mkdir(parents=True)
        for i in ids:
            Image.fromarray(image).save(root / folder / "images" / f"{i}_{folder}.tif")
            if folder == "training" or test_labels:
                Image.fromarray(label).save(root / folder / "1st_manual" / f"{i}_manual1.gif")
    return root


def test_fake_layout_is_cropped_and_resized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    data = DriveVessel().load(write_fake_drive(tmp_path / "DRIVE"))
    assert data.train.images.shape == (20, 3, 512, 512)
    # Output (256, 256) samples crop (32, 40) = image (48, 48), inside the fundus; (0, 0) is black margin.
    assert data.train.images[0, :, 256, 256].tolist() == [150, 80, 40]
    assert data.test.images[3, :, 0, 0].tolist() == [0, 0, 0]
    # Scale 6.4: output column j samples crop x = (j + 0.5) / 6.4; the label falls from 255 at x = 39.5 to
    # 0 at 40.5, so it exceeds 0.3 * 255 while x < 40.2, i.e. j <= 256: 257 columns. Without the crop the
    # label would start at column 43.
    np.testing.assert_array_equal(data.test.masks[0].sum(dim=1).numpy(), 257)
    assert bool(data.test.masks[0, :, :257].all())


def test_changed_file_invalidates_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    root = write_fake_drive(tmp_path / "DRIVE")
    assert bool(DriveVessel().load(tmp_path).test.masks[4].any())
    label = root / "test" / "1st_manual" / "05_manual1.gif"
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(label)
    os.utime(label, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    assert not bool(DriveVessel().load(tmp_path).test.masks[4].any())
    assert len(list((tmp_path / "cache" / "prepared").glob("*.npz"))) == 2


def test_corrupt_image_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    root = write_fake_drive(tmp_path / "DRIVE")
    broken = root / "training" / "images" / "27_training.tif"
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(DataError) as caught:
        DriveVessel().load(tmp_path)
    assert f"{broken} is not a readable image" in str(caught.value)
    assert "https://drive.grand-challenge.org/" in str(caught.value)


def test_damaged_cache_is_prepared_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    write_fake_drive(tmp_path / "DRIVE")
    expected = DriveVessel().load(tmp_path).train.masks
    (cached,) = (tmp_path / "cache" / "prepared").glob("*.npz")
    cached.write_bytes(b"PK\x03\x04 half a zip")
    assert bool((DriveVessel().load(tmp_path).train.masks == expected).all())


def test_availability_without_a_folder() -> None:
    reason = DriveVessel().availability(None).reason
    assert not DriveVessel().availability(None).ok
    assert "no data folder" in reason and "https://drive.grand-challenge.org/" in reason


def test_availability_of_an_empty_folder(tmp_path: Path) -> None:
    available = DriveVessel().availability(tmp_path)
    assert not available.ok
    assert f"{tmp_path / 'DRIVE'}" in available.reason and "https://drive.grand-challenge.org/" in available.reason
    with pytest.raises(DataError, match="DRIVE not found"):
        DriveVessel().load(tmp_path)


def test_load_without_test_labels_says_where_to_get_them(tmp_path: Path) -> None:
    write_fake_drive(tmp_path / "DRIVE", test_labels=False)
    assert DriveVessel().availability(tmp_path).ok  # found, but incomplete: an error, not a dataset to skip
    with pytest.raises(DataError) as caught:
        DriveVessel().load(tmp_path)
    reason = str(caught.value)
    assert "test labels" in reason and "cannot be scored" in reason
    assert "original 2004 DRIVE release" in reason
    assert "\n" not in reason


def test_one_missing_test_label_is_named_not_taken_for_a_download_without_them(tmp_path: Path) -> None:
    root = write_fake_drive(tmp_path / "DRIVE")
    (root / "test" / "1st_manual" / "05_manual1.gif").unlink()
    with pytest.raises(DataError, match=r"1 DRIVE file\(s\) missing, first .*05_manual1\.gif") as caught:
        DriveVessel().load(tmp_path)
    assert "cannot be scored" not in str(caught.value)


def test_load_names_a_missing_image(tmp_path: Path) -> None:
    root = write_fake_drive(tmp_path / "DRIVE")
    (root / "test" / "images" / "13_test.tif").unlink()
    assert DriveVessel().availability(root).ok
    with pytest.raises(DataError) as caught:
        DriveVessel().load(root)
    assert f"1 DRIVE file(s) missing, first {root / 'test' / 'images' / '13_test.tif'}" in str(caught.value)


def test_plugin_registers_the_task() -> None:
    registered: list = []
    ssl_bench_register_tasks(registered.append)
    (task,) = registered
    assert isinstance(task, DriveVessel)
    assert (task.name, task.modality, task.channels, task.rotation_degrees) == ("drive-vessel", "fundus", 3, 180)
