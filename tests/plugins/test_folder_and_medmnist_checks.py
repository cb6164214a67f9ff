"""Folder tasks and MedMNIST files: every image named is read or refused, label maps need their foreground
declared, and MedMNIST labels are checked against the declared classes when the data loads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssl_bench_tasks._folder import FolderSpec, FolderTask
from ssl_bench_tasks.folder import configured_specs

from ssl_bench.errors import DataError
from ssl_bench.plugins import get_registry

IDS = ("s1", "s2", "s3", "s4", "s5")  # seeded split: s3 is the test image


def scans_task(**options) -> FolderTask:
    return FolderTask(FolderSpec(name="scans", folders=("scans",), modality="ultrasound", channels=1, **options))


def write_scans(data_root: Path, side: int = 16) -> Path:
    """``scans/`` with grey images and {0, 255} square masks."""
    root = data_root / "scans"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : side // 2, side // 4 : side // 2] = 255
    for image_id in IDS:
        Image.fromarray(np.full((side, side), 100, np.uint8)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
    return root


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --- Label maps and the foreground setting ---------------------------------------------------------------------


def write_label_maps(data_root: Path) -> dict[str, np.ndarray]:
    """512 x 512 label maps of 0 (background), 1, 2 and 3 in random places; the task's size keeps every pixel."""
    root = write_scans(data_root, side=512)
    rng = np.random.default_rng(3)
    written = {}
    for image_id in IDS:
        labels = rng.choice(np.array([0, 1, 2, 3], np.uint8), size=(512, 512), p=[0.7, 0.1, 0.1, 0.1])
        Image.fromarray(labels).save(root / "masks" / f"{image_id}.png")
        written[image_id] = labels
    return written


def test_configured_foreground_labels_read_label_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_label_maps(tmp_path / "data")
    config = tmp_path / "folders.toml"
    config.write_text(
        '[folder_tasks.scans]\nfolder = "scans"\nmodality = "ultrasound"\nchannels = 1\nforeground = [2, 1]\n'
    )
    monkeypatch.setenv("SSL_BENCH_FOLDER_TASKS", str(config))
    data = get_registry().task("scans").load(tmp_path / "data")
    for split in (data.train, data.test):
        for image_id, mask in zip(split.ids, split.masks.numpy(), strict=True):
            labels = written[image_id]
            expected = (labels == 1) | (labels == 2)
            assert int(mask.sum()) == int(expected.sum())
            np.testing.assert_array_equal(mask, expected)


def test_label_map_without_declared_foreground_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    label_map = np.zeros((16, 16), np.uint8)
    label_map[2:6, 2:6], label_map[8:12, 8:12] = 1, 2
    Image.fromarray(label_map).save(root / "masks" / "s4.png")  # one label map among {0, 255} masks
    with pytest.raises(DataError) as caught:
        scans_task().load(tmp_path)
    message = one_line(caught)
    assert message.startswith(f"{root / 'masks' / 's4.png'} holds mask values 0, 1, 2")
    assert "foreground = [1, 2]" in message


def test_sixteen_bit_zero_one_masks_among_others_are_not_empty(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    zero_one = np.zeros((16, 16), np.uint16)
    zero_one[4:8, 4:8] = 1  # the square of write_scans
    for image_id in ("s2", "s3"):
        Image.fromarray(zero_one).save(root / "masks" / f"{image_id}.png")
    data = scans_task().load(tmp_path)
    masks = dict(zip(data.train.ids + data.test.ids, [*data.train.masks, *data.test.masks], strict=True))
    # The same square stored as {0, 1} in 16 bits or as {0, 255} in 8: the same prepared mask.
    assert masks["s1"].any()
    for image_id in IDS:
        assert bool((masks[image_id] == masks["s1"]).all()), image_id


@pytest.mark.parametrize("value", ['"1, 2"', "[]", "[true]", "[-1]", "[1.5]", "[[1]]"])
def test_bad_foreground_setting_names_the_table(tmp_path: Path, value: str) -> None:
    config = tmp_path / "folders.toml"
    config.write_text(
        f'[folder_tasks.scans]\nfolder = "scans"\nmodality = "ultrasound"\nchannels = 1\nforeground = {value}\n'
    )
    with pytest.raises(DataError, match=r"\[folder_tasks\.scans\]: .*foreground must be a list of label values"):
        configured_specs(config)


def test_foreground_setting_is_part_of_the_task_version() -> None:
    plain = scans_task()
    assert scans_task(foreground=None).version == plain.version
    assert scans_task(foreground=[1, 2]).version != plain.version
    assert scans_task(foreground=[1, 2]).version == scans_task(foreground=(2, 1)).version
    assert scans_task(foreground=[1, 2]).version != scans_task(foreground=[1]).version


# --- Every image the layout names is read or refused -------------------------------------------------------------


@pytest.mark.parametrize("folder", ["images", "masks"])
def test_symlink_loop_is_refused_naming_it(tmp_path: Path, folder: str) -> None:
    root = write_scans(tmp_path)
    looped = root / folder / "s3.png"  # the test image: dropping it would leave no test split
    looped.unlink()
    os.symlink(looped, looped)
    with pytest.raises(DataError) as caught:
        scans_task().load(tmp_path)
    assert one_line(caught).startswith(f"{looped} is not an image file but a symbolic link that loops")


def test_dangling_symlink_is_refused_naming_its_target(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    dangling = root / "images" / "s2.png"
    dangling.unlink()
    os.symlink(tmp_path / "elsewhere" / "s2.png", dangling)
    with pytest.raises(DataError) as caught:
        scans_task().load(tmp_path)
    assert str(tmp_path / "elsewhere" / "s2.png") in one_line(caught)
    assert one_line(caught).startswith(f"{dangling} is not an image file but a symbolic link")


def test_folder_named_like_an_image_is_refused(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    (root / "images" / "s6.png").mkdir()
    with pytest.raises(DataError, match=re.escape(f"{root / 'images' / 's6.png'} is not an image file but a folder")):
        scans_task().load(tmp_path)


def test_symlink_to_an_image_is_read(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    (root / "images" / "s1.png").rename(tmp_path / "s1.png")
    os.symlink(tmp_path / "s1.png", root / "images" / "s1.png")
    data = scans_task().load(tmp_path)
    assert len(data.train) + len(data.test) == len(IDS)


def test_undecodable_image_is_refused_naming_it(tmp_path: Path) -> None:
    root = write_scans(tmp_path)
    broken = root / "images" / "s3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError) as caught:
        scans_task().load(tmp_path)
    assert one_line(caught).startswith(f"{broken} is not a readable image")


# --- MedMNIST labels ---------------------------------------------------------------------------------------------

COUNTS = {"train": 6, "val": 2, "test": 4}


def write_npz(path: Path, labels_per_image: int = 1, **overrides: np.ndarray) -> Path:
    """A grey MedMNIST-style file whose labels alternate 0 and 1 down each column (every split holds both)."""
    arrays: dict[str, np.ndarray] = {}
    for split, n in COUNTS.items():
        arrays[f"{split}_images"] = np.zeros((n, 28, 28), np.uint8)
        labels = (np.arange(n)[:, None] + np.arange(labels_per_image)) % 2  # each column alternates too
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    np.savez(path, **{**arrays, **overrides})
    return path


BAD_LABELS = [
    pytest.param({"test_labels": np.full((4, 1), -1)}, "test_labels hold -1, expected 0..1", id="minus-one"),
    pytest.param({"train_labels": np.array([[0], [1], [7], [0], [1], [7]])}, "train_labels hold 7", id="seven"),
    pytest.param({"val_labels": np.array([[0.0], [np.nan]])}, "val_labels hold non-integer values nan", id="nan"),
    pytest.param({"val_labels": np.array([[0.5], [1.0]])}, "val_labels hold non-integer values 0.5", id="fraction"),
    pytest.param({"test_labels": np.ones((4, 1), np.uint8)}, "test_labels hold one class only", id="one-class"),
    pytest.param(
        {"val_images": np.zeros((0, 28, 28), np.uint8), "val_labels": np.zeros((0, 1), np.uint8)},
        "the val split has no images",
        id="empty-split",
    ),
    pytest.param({"train_labels": np.zeros((6, 2), np.uint8)}, "train_labels are uint8 (6, 2)", id="two-columns"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_LABELS)
def test_bad_medmnist_labels_are_refused_on_load(tmp_path: Path, overrides: dict, message: str) -> None:
    path = write_npz(tmp_path / "pneumoniamnist.npz", **overrides)
    with pytest.raises(DataError) as caught:
        get_registry().task("pneumoniamnist").load(tmp_path)
    text = one_line(caught)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "download pneumoniamnist.npz again from https://medmnist.com/" in text


def test_out_of_range_labels_show_a_few_distinct_values(tmp_path: Path) -> None:
    labels = np.array([[-3], [-2], [-1], [7], [8], [9]])
    write_npz(tmp_path / "pneumoniamnist.npz", train_labels=labels)
    with pytest.raises(DataError, match=r"train_labels hold -3, -2, -1, 7, 8, \.\.\. \(6 distinct values\)"):
        get_registry().task("pneumoniamnist").load(tmp_path)


def test_good_medmnist_labels_load_as_int64_columns(tmp_path: Path) -> None:
    # Whole-number floats and one-dimensional labels are unambiguous, and are kept.
    write_npz(tmp_path / "pneumoniamnist.npz", test_labels=np.array([0.0, 1.0, 1.0, 0.0]))
    data = get_registry().task("pneumoniamnist").load(tmp_path)
    assert data.test.labels.dtype.is_floating_point is False
    assert data.test.labels.tolist() == [[0], [1], [1], [0]]
    assert data.train.labels[:, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_multi_label_values_must_be_zero_or_one_and_test_must_mix(tmp_path: Path) -> None:
    task = get_registry().task("chestmnist")  # 14 binary labels per image
    write_npz(tmp_path / "chestmnist.npz", labels_per_image=14)
    assert task.load(tmp_path).train.labels.shape == (6, 14)
    two = np.zeros((6, 14), np.uint8)
    two[0, 3] = 2
    write_npz(tmp_path / "chestmnist.npz", labels_per_image=14, train_labels=two)
    with pytest.raises(DataError, match=r"train_labels hold 2, expected 0 or 1 \(one column per label\)"):
        task.load(tmp_path)
    write_npz(tmp_path / "chestmnist.npz", labels_per_image=14, test_labels=np.zeros((4, 14), np.uint8))
    with pytest.raises(DataError, match=r"test_labels hold one class only \(every label is all 0 or all 1\)"):
        task.load(tmp_path)
