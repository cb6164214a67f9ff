"""Splits that never leak a patient: a folder task's group rule keeps each group in one split, a split file is
honoured as written, and ``data check`` warns when numbered names of one series span train and test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ssl_bench_tasks._files import SPLIT_SEED, TEST_SHARE, grouped_split, seeded_split
from ssl_bench_tasks._folder import FolderSpec, FolderTask

from ssl_bench.datacheck import grouped_names_warning
from ssl_bench.errors import DataError


def patients(sizes: list[int]) -> dict[str, str]:
    """Image id -> patient, ``sizes[p]`` slices for patient p."""
    return {f"patient{p:03d}_slice{s}": f"patient{p:03d}" for p, size in enumerate(sizes) for s in range(size)}


@pytest.mark.parametrize("case", range(300))
def test_no_group_spans_train_and_test_whatever_the_group_sizes(case: int) -> None:
    rng = np.random.default_rng(case)
    sizes = rng.integers(1, 12, size=rng.integers(2, 40)).tolist()
    groups = patients(sizes)
    split = grouped_split(groups, seed=SPLIT_SEED + case)
    train, test = set(split["train"]), set(split["test"])
    assert train | test == set(groups) and not train & test and len(split["train"]) == len(train)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert train, "a group that would leave no training image stays in train"
    # Test holds one image in five or more, unless only a group that would empty train could bring it there.
    assert len(test) >= len(groups) // TEST_SHARE or len(test) + max(sizes) >= len(groups)
    assert list(split["test"]) == sorted(test)


def test_without_groups_the_split_is_the_seeded_one() -> None:
    singletons = {f"img{i}": f"img{i}" for i in range(23)}
    assert grouped_split(singletons) == seeded_split(list(singletons))


def write_slices(data_root: Path, sizes: list[int], split_file: str | None = None) -> Path:
    """``volumes/images`` and ``masks`` with ``sizes[p]`` 8-px slices of each patient, named patientPPP_sliceS."""
    root = data_root / "volumes"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    for image_id in patients(sizes):
        Image.fromarray(np.full((8, 8), 90, np.uint8)).save(root / "images" / f"{image_id}.png")
        Image.fromarray(mask).save(root / "masks" / f"{image_id}.png")
    if split_file is not None:
        (root / "split.csv").write_text(split_file)
    return root


def volumes_task(**options) -> FolderTask:
    return FolderTask(FolderSpec(name="volumes", folders=("volumes",), modality="mri", channels=1, **options))


SIZES = [3] * 12  # 12 patients of 3 slices: a split by file almost surely cuts some patient


def test_a_group_rule_keeps_each_patient_in_one_split_where_the_file_split_leaked(tmp_path: Path) -> None:
    write_slices(tmp_path, SIZES)
    by_file = volumes_task().load(tmp_path)
    warning = grouped_names_warning(by_file.train.ids, by_file.test.ids)
    assert warning is not None and "group rule" in warning and "patient" in warning  # the leak this rule fixes
    grouped = volumes_task(group=r"^(patient\d+)_").load(tmp_path)
    patient = {image_id: image_id.split("_")[0] for image_id in [*grouped.train.ids, *grouped.test.ids]}
    assert not {patient[i] for i in grouped.train.ids} & {patient[i] for i in grouped.test.ids}
    assert len(grouped.test) >= len(patient) // TEST_SHARE and len(grouped.test) % 3 == 0
    assert grouped_names_warning(grouped.train.ids, grouped.test.ids) is None
    # The rule is part of the task's version: results of the leaky split are never reused for it.
    assert volumes_task(group=r"^(patient\d+)_").version != volumes_task().version


def test_a_split_file_is_the_split(tmp_path: Path) -> None:
    ids = list(patients([2, 2, 2]))
    rows = "".join(f"{image_id},{'test' if image_id.startswith('patient001') else 'train'}\n" for image_id in ids)
    write_slices(tmp_path, [2, 2, 2], split_file="id,split\n" + rows)
    data = volumes_task(split_file="split.csv").load(tmp_path)
    assert data.test.ids == ("patient001_slice0", "patient001_slice1")
    assert sorted(data.train.ids) == [
        "patient000_slice0",
        "patient000_slice1",
        "patient002_slice0",
        "patient002_slice1",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,fold\nx,1\n", r"split\.csv must have columns id and split"),
        ("id,split\npatient000_slice0,train\n", r"does not list the images patient000_slice1, patient001_slice0"),
        ("id,split\n" + "".join(f"{i},val\n" for i in patients([2, 2])), r"a split other than train or test to pat"),
        ("id,split\n" + "".join(f"{i},train\n" for i in patients([2, 2])) + "ghost,test\n", r"ids with no image ghost"),
        ("id,split\n" + "".join(f"{i},train\n" for i in patients([2, 2])), r"some images in train and some in test"),
    ],
)
def test_a_wrong_split_file_is_refused_naming_the_file_and_the_ids(tmp_path: Path, content: str, message: str):
    write_slices(tmp_path, [2, 2], split_file=content)
    with pytest.raises(DataError, match=message):
        volumes_task(split_file="split.csv").load(tmp_path)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("(", r"group must be a regular expression, e.g. group = '\^\(patient\\d\+\)_'; '\(' is not one"),
        (r"^(case\d+)", r"group '\^\(case\\d\+\)' finds nothing in the image name 'patient000_slice0'"),
        (r"^(patient)", r"puts all 6 images in one group, 'patient': a split needs two"),
    ],
)
def test_a_group_rule_that_cannot_split_is_refused(tmp_path: Path, group: str, message: str) -> None:
    write_slices(tmp_path, [3, 3])
    with pytest.raises(DataError, match=message):
        volumes_task(group=group).load(tmp_path)


def test_a_task_gives_a_group_rule_or_a_split_file_not_both() -> None:
    with pytest.raises(DataError, match="give one of group, group_file, group_by_folder and split_file, not"):
        volumes_task(group=r"^(patient\d+)_", split_file="split.csv")


def test_a_group_file_groups_images_whose_names_do_not_say_their_patient(tmp_path: Path) -> None:
    ids = list(patients(SIZES))
    # Names say nothing here: the file maps each image to an eye; every three images are one eye.
    rows = "".join(f"{image_id},eye{index // 3}\n" for index, image_id in enumerate(sorted(ids)))
    write_slices(tmp_path, SIZES, split_file="id,group\n" + rows)
    (tmp_path / "volumes" / "split.csv").rename(tmp_path / "volumes" / "groups.csv")
    task = volumes_task(group_file="groups.csv")
    data = task.load(tmp_path)
    group = {image_id: task.image_group(image_id) for image_id in ids}
    assert set(group.values()) == {f"eye{i}" for i in range(12)}
    assert not {group[i] for i in data.train.ids} & {group[i] for i in data.test.ids}
    with pytest.raises(DataError, match="give one of group, group_file, group_by_folder and split_file, not"):
        volumes_task(group_file="groups.csv", split_file="split.csv")
    (tmp_path / "volumes" / "groups.csv").write_text("id,group\n" + rows.replace(",eye0\n", ",\n", 1))
    with pytest.raises(DataError, match=r"group file .*groups\.csv gives no group to patient000_slice0"):
        task.load(tmp_path)


def test_one_folder_per_patient_groups_its_images(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    for patient in range(6):
        for folder in ("images", "masks"):
            (tmp_path / "volumes" / folder / f"p{patient}").mkdir(parents=True)
        for visit in range(3):  # the same names in every patient's folder
            Image.fromarray(np.full((8, 8), 90 + visit, np.uint8)).save(
                tmp_path / "volumes/images" / f"p{patient}/v{visit}.png"
            )
            Image.fromarray(mask).save(tmp_path / "volumes/masks" / f"p{patient}/v{visit}.png")
    task = volumes_task(group_by_folder=True)
    data = task.load(tmp_path)
    assert len(data.train) + len(data.test) == 18 and "p0/v0" in [*data.train.ids, *data.test.ids]
    patients_of = {
        split: {i.split("/")[0] for i in ids} for split, ids in (("train", data.train.ids), ("test", data.test.ids))
    }
    assert patients_of["test"] and not patients_of["train"] & patients_of["test"]
    assert task.image_group("p3/v1") == "p3"
