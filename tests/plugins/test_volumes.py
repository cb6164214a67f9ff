"""Volume tasks: NIfTI volumes in the Decathlon layout read as slices, with the right masks, windows and groups."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
from ssl_bench_tasks.volumes import VolumeSpec, VolumeTask
from typer.testing import CliRunner

from ssl_bench.cli import app
from ssl_bench.errors import DataError

SHAPE = (16, 16, 6)  # x, y, z of an RAS volume (identity affine: already canonical)
CUBE = (slice(4, 10), slice(3, 8), slice(1, 4))  # the labelled box: axial slices 1, 2 and 3


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4) if affine is None else affine), path)


def write_decathlon(root: Path, cases: int = 5, shift: float = 0.0) -> None:
    """``cases`` CT volumes of -1000..1000 HU ramps (shifted by 7 HU a case, and by ``shift``), each labelled 1 in
    CUBE and 2 in one voxel row beside it."""
    for case in range(cases):
        hounsfield = np.linspace(-1000, 1000, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) + 7 * case + shift
        labels = np.zeros(SHAPE, np.uint8)
        labels[CUBE] = 1
        labels[12, 3:8, 1] = 2
        write_volume(root / "imagesTr" / f"case_{case:02d}.nii.gz", hounsfield)
        write_volume(root / "labelsTr" / f"case_{case:02d}.nii.gz", labels)
    (root / "labelsTr" / "._case_00.nii.gz").write_bytes(b"macOS resource fork")  # not a volume: ignored
    (root / "dataset.json").write_text(json.dumps({"name": "test", "labels": {"0": "bg", "1": "a", "2": "b"}}))


def task(**options) -> VolumeTask:
    return VolumeTask(VolumeSpec(**{"name": "cubes", "folder": "cubes", "modality": "ct", "size": 16, **options}))


def test_slices_with_foreground_become_images_and_masks_grouped_by_volume(tmp_path: Path) -> None:
    write_decathlon(tmp_path / "cubes")
    data = task(window=(-100.0, 100.0), foreground=(1,)).load(tmp_path)
    ids = [*data.train.ids, *data.test.ids]
    # Axial slices 1-3 of each of 5 volumes hold label 1; the label-2 row alone would not count.
    assert sorted(ids) == sorted(f"case_{c:02d}_s{z:03d}" for c in range(5) for z in (1, 2, 3))
    volumes = {split: {image_id.rsplit("_s", 1)[0] for image_id in split_ids} for split, split_ids in
               (("train", data.train.ids), ("test", data.test.ids))}  # fmt: skip
    assert volumes["train"] and volumes["test"] and not volumes["train"] & volumes["test"]
    # The cube's x 4..9, y 3..7 seen as a radiologist would (rot90: rows are y from the top, 15 - y; columns x).
    expected = np.zeros((16, 16), bool)
    expected[8:13, 4:10] = True
    assert all(np.array_equal(mask.numpy(), expected) for mask in [*data.train.masks, *data.test.masks])
    # The window maps -100..100 HU to 0..255: the ramp's voxels below -100 HU are 0, above 100 HU 255.
    images = np.concatenate([data.train.images.numpy(), data.test.images.numpy()])
    assert images.min() == 0 and images.max() == 255 and data.train.images.shape[1:] == (1, 16, 16)


def test_without_foreground_labels_any_non_zero_label_counts_and_empty_slices_may_stay(tmp_path: Path) -> None:
    write_decathlon(tmp_path / "cubes")
    any_label = task().load(tmp_path)
    ids, all_masks = [*any_label.train.ids, *any_label.test.ids], [*any_label.train.masks, *any_label.test.masks]
    masks = dict(zip(ids, all_masks, strict=True))
    assert int(masks["case_00_s001"].sum()) == 6 * 5 + 5 and bool(masks["case_00_s001"][8:13, 12].all())
    assert int(masks["case_00_s002"].sum()) == 6 * 5  # the label-2 row is in slice 1 only
    kept = task(keep_empty=True).load(tmp_path)
    assert len(kept.train) + len(kept.test) == 5 * SHAPE[2]
    sagittal = task(axis=0).load(tmp_path)  # x = 4..9 hold the cube, x = 12 the label-2 row
    assert {image_id[-3:] for image_id in [*sagittal.train.ids, *sagittal.test.ids]} == {
        f"{x:03d}" for x in (4, 5, 6, 7, 8, 9, 12)
    }


def test_a_decathlon_folder_is_found_by_list_and_passes_data_check(tmp_path: Path) -> None:
    write_decathlon(tmp_path / "Task09_Spleen")
    listed = invoke("list", "tasks", "--data-root", str(tmp_path))
    assert "msd-spleen" in listed.output and "(available)" in listed.output.split("msd-spleen")[1].splitlines()[0]
    checked = invoke("data", "check", "--data-root", str(tmp_path))
    line = next(line for line in checked.output.splitlines() if "msd-spleen" in line)
    assert line.startswith("found") and "train" in line and "test images" in line


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda root: (root / "imagesTr" / "case_01.nii.gz").unlink(), r"lack their image, first .*case_01\.nii\.gz"),
        (lambda root: (root / "imagesTr" / "case_02.nii.gz").write_bytes(b"no"), r"case_02\.nii\.gz is not a rea"),
        (
            lambda root: write_volume(root / "labelsTr" / "case_03.nii.gz", np.zeros((4, 4, 4), np.uint8)),
            r"case_03\.nii\.gz: image \(16, 16, 6\) and label \(4, 4, 4\) differ",
        ),
    ],
)
def test_a_broken_volume_set_is_refused_naming_the_file(tmp_path: Path, damage, message: str) -> None:
    write_decathlon(tmp_path / "cubes")
    damage(tmp_path / "cubes")
    with pytest.raises(DataError, match=message):
        task().load(tmp_path)


def test_a_volume_task_defined_in_the_run_file_is_registered(tmp_path: Path) -> None:
    from ssl_bench.plugins import get_registry

    table = {"type": "volumes", "folder": "cubes", "modality": "ct", "window": [-100, 100], "size": 16}
    registered = get_registry({"my-cubes": table}).task("my-cubes")
    assert registered.spec.window == (-100.0, 100.0) and registered.version != task().version
    with pytest.raises(DataError, match=r"window must be \[low, high\] with low < high"):
        VolumeSpec("bad", "cubes", "ct", window=(100, -100))


def write_dicom_series(folder: Path, hounsfield: np.ndarray) -> None:
    """``hounsfield`` (x, y, z) as a CT series: slice k at z = k mm, rows along y, columns along x (LPS), int16
    stored with rescale intercept -1024."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    for k in range(hounsfield.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        slice_ = Dataset()
        slice_.file_meta = meta
        slice_.SOPClassUID, slice_.SOPInstanceUID, slice_.SeriesInstanceUID = CTImageStorage, generate_uid(), series
        slice_.Modality = "CT"
        slice_.ImagePositionPatient, slice_.ImageOrientationPatient = [0, 0, k], [1, 0, 0, 0, 1, 0]
        slice_.PixelSpacing, slice_.Rows, slice_.Columns = [1, 1], hounsfield.shape[1], hounsfield.shape[0]
        slice_.SamplesPerPixel, slice_.PhotometricInterpretation = 1, "MONOCHROME2"
        slice_.BitsAllocated, slice_.BitsStored, slice_.HighBit, slice_.PixelRepresentation = 16, 16, 15, 1
        slice_.RescaleIntercept, slice_.RescaleSlope = -1024, 1
        slice_.PixelData = (hounsfield[:, :, k].T + 1024).astype(np.int16).tobytes()  # rows are y
        # Written in reverse order: the reader orders slices by position, not by file name.
        slice_.save_as(folder / f"{hounsfield.shape[2] - k:03d}.dcm", enforce_file_format=True)


def test_a_dicom_series_reads_as_the_same_volume_as_its_nifti(tmp_path: Path) -> None:
    """The same CT (a bright cube, -1000 HU elsewhere) as DICOM series and as NIfTI in the DICOM's RAS grid: the
    slices, their masks (the label cube, NIfTI) and the image's cube coincide."""
    labels = np.zeros(SHAPE, np.uint8)
    labels[CUBE] = 1
    hounsfield = np.where(labels > 0, 1000, -1000).astype(np.float32)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM's x and y (LPS) point the other way in NIfTI (RAS)
    for case in range(3):
        write_dicom_series(tmp_path / "dicom" / "imagesTr" / f"ct{case}", hounsfield)
        for layout, volume, name in (
            ("dicom", labels, "labelsTr"),
            ("nifti", labels, "labelsTr"),
            ("nifti", hounsfield, "imagesTr"),
        ):
            suffix = ".nii" if name == "imagesTr" else ".nii.gz"  # both NIfTI file forms
            write_volume(tmp_path / layout / name / f"ct{case}{suffix}", volume, ras)
    window = (-100.0, 100.0)
    dicom = task(folder="dicom", window=window).load(tmp_path)
    nifti = task(folder="nifti", window=window).load(tmp_path)
    assert dicom.train.ids == nifti.train.ids and dicom.test.ids == nifti.test.ids
    assert len(dicom.train) + len(dicom.test) == 3 * 3  # axial slices 1-3 of three series
    for ours, theirs in ((dicom.train, nifti.train), (dicom.test, nifti.test)):
        assert torch.equal(ours.images, theirs.images) and torch.equal(ours.masks, theirs.masks)
        assert torch.equal(ours.masks, ours.images[:, 0] > 127)  # the label sits on the image's bright cube


def test_a_pool_leaves_out_every_slice_of_a_volume_that_any_task_tests_on(tmp_path: Path) -> None:
    """Two tasks on the same patients, the second with more of them: the volumes one tests on differ from the
    other's, and the pool (both tasks' training slices) holds no slice of any tested volume."""
    from ssl_bench.plugins import get_registry
    from ssl_bench.pools import resolve_pool

    write_decathlon(tmp_path / "few", cases=5)
    write_decathlon(tmp_path / "many", cases=8, shift=3.0)  # other scans of the same patients: other bytes
    tables = {
        name: {"type": "volumes", "folder": name, "modality": "ct", "size": 16, "window": [-100, 100]}
        for name in ("few", "many")
    }
    registry = get_registry(tables)
    data = {name: registry.task(name).load(tmp_path) for name in tables}
    tested = {image_id.rsplit("_s", 1)[0] for split in data.values() for image_id in split.test.ids}
    trained = [image_id for split in data.values() for image_id in split.train.ids]
    leaking = [image_id for image_id in trained if image_id.rsplit("_s", 1)[0] in tested]
    assert leaking, "the scenario must have training slices of a volume that the other task tests on"
    pool = resolve_pool("ct", registry, tmp_path, {}).load()
    assert len(pool) == len(trained) - len(leaking)
