"""Data that cannot be right is refused before training: all-empty masks and incomplete datasets, on load and in
``ssl-bench data check``; and the task package's modules import only the API and the package's shared modules."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image
from ssl_bench_tasks._folder import FolderSpec, FolderTask

from ssl_bench.datacheck import check_task_data
from ssl_bench.errors import DataError
from ssl_bench.plugins import get_registry

TASKS = REPO / "tasks" / "ssl_bench_tasks"
IDS = ("s1", "s2", "s3", "s4", "s5")
# Their seeded split (SHA-256 of "0:<id>"): training list s5, s4, s1, s2; test s3.
TRAIN_IDS = ("s5", "s4", "s1", "s2")


def scans_task() -> FolderTask:
    return FolderTask(FolderSpec(name="scans", folders=("scans",), modality="ultrasound", channels=1))


def write_scans(data_root: Path, empty: frozenset[str] = frozenset()) -> Path:
    """``scans/`` with 8x8 grey images and masks; the masks of ``empty`` are all zero, the others a square."""
    root = data_root / "scans"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for image_id in IDS:
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(root / "images" / f"{image_id}.png")
        mask = np.zeros((8, 8), np.uint8)
        if image_id not in empty:
            mask[2:6, 2:6] = 255
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
    return root


# --- All-empty masks ------------------------------------------------------------------------------------


def test_all_empty_training_masks_are_refused_naming_a_few_files(tmp_path: Path) -> None:
    root = write_scans(tmp_path, empty=frozenset(TRAIN_IDS))
    masks = root / "masks"
    expected = (
        f"all 4 train masks of scans are empty (4 label files: {masks / 's5.png'}, {masks / 's4.png'}, "
        f"{masks / 's1.png'} and 1 more)"
    )
    with pytest.raises(DataError) as caught:
        scans_task().load(tmp_path)
    assert expected in str(caught.value)
    report = check_task_data(scans_task(), tmp_path)
    assert report.status == "error" and expected in report.detail


def test_all_empty_test_masks_are_refused(tmp_path: Path) -> None:
    root = write_scans(tmp_path, empty=frozenset({"s3"}))
    expected = f"all 1 test masks of scans are empty (1 label files: {root / 'masks' / 's3.png'})"
    with pytest.raises(DataError, match=re.escape(expected)):
        scans_task().load(tmp_path)
    assert check_task_data(scans_task(), tmp_path).status == "error"


def test_some_empty_masks_are_accepted(tmp_path: Path) -> None:
    write_scans(tmp_path, empty=frozenset({"s5", "s1"}))
    data = scans_task().load(tmp_path)
    assert [bool(mask.any()) for mask in data.train.masks] == [False, True, False, True]
    assert check_task_data(scans_task(), tmp_path).status == "found"


def test_zero_one_masks_are_not_refused_as_empty(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    for path in (root / "masks").iterdir():
        Image.fromarray(np.asarray(Image.open(path)) // 255).save(path)  # the same squares as {0, 1}
    data = scans_task().load(tmp_path)
    assert all(bool(mask[200:312, 200:312].all()) and not bool(mask[:100].any()) for mask in data.train.masks)


# --- Incomplete or absent datasets ----------------------------------------------------------------------


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    (root / "masks" / "s4.png").unlink()
    expected = f"1 scans file(s) missing, first {root / 'masks' / 's4.png'}"
    report = check_task_data(scans_task(), tmp_path)
    assert report.status == "error" and expected in report.detail
    with pytest.raises(DataError, match=re.escape(expected)):
        scans_task().load(tmp_path)


def test_a_present_folder_without_its_marked_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "scans" / "images").mkdir(parents=True)
    report = check_task_data(scans_task(), tmp_path)
    assert report.status == "error" and f"first {tmp_path / 'scans' / 'masks'};" in report.detail
    with pytest.raises(DataError, match="masks"):
        scans_task().load(tmp_path)


def test_a_present_folder_without_images_is_an_error(tmp_path: Path) -> None:
    for folder in ("images", "masks"):
        (tmp_path / "scans" / folder).mkdir(parents=True)
    report = check_task_data(scans_task(), tmp_path)
    assert report.status == "error" and f"scans in {tmp_path / 'scans'} has no train images" in report.detail


def test_an_absent_dataset_folder_stays_missing(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    report = check_task_data(scans_task(), tmp_path)
    assert report.status == "missing" and f"none of {tmp_path / 'scans'} holds images and masks" in report.detail
    with pytest.raises(DataError, match="scans not found"):
        scans_task().load(tmp_path)


# --- Classification labels ------------------------------------------------------------------------------


def write_breastmnist(data_root: Path, train_labels: list[int]) -> None:
    """``breastmnist.npz`` with blank images, the given training labels, and val 1/3, test 2/6 of class 0/1."""
    labels = {"train": train_labels, "val": [0, 1, 1, 1], "test": [0, 0, 1, 1, 1, 1, 1, 1]}
    arrays = {}
    for split, values in labels.items():
        arrays[f"{split}_images"] = np.zeros((len(values), 28, 28), np.uint8)
        arrays[f"{split}_labels"] = np.array(values).reshape(-1, 1)
    np.savez(data_root / "breastmnist.npz", **arrays)


def test_data_check_reports_class_balance_and_warns_of_sorted_training_labels(tmp_path, monkeypatch):
    task = get_registry().task("breastmnist")
    monkeypatch.setattr(task, "expected_counts", None)  # only the labels may warn
    write_breastmnist(tmp_path, [1] * 75 + [0] * 25)
    report = check_task_data(task, tmp_path)
    assert report.status == "warning" and report.detail == "100 train, 8 test images"
    assert report.notes[0] == "images of class 0/1: train 25/75 (25%/75%), val 1/3 (25%/75%), test 2/6 (25%/75%)"
    # 2 runs, where a random order of 75 + 25 labels gives 100 - (75 * 74 + 25 * 24) / 100 = 38.5 on average.
    expected = "warning: the training labels are sorted: 2 runs of equal labels where a random order gives about 38,"
    assert report.notes[1].startswith(expected) and len(report.notes) == 2
    write_breastmnist(tmp_path, [1, 1, 1, 0] * 25)  # the same labels in 50 runs: no warning
    report = check_task_data(task, tmp_path)
    assert report.status == "found" and len(report.notes) == 1
