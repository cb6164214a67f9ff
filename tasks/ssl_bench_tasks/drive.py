"""DRIVE retinal vessel segmentation (Staal et al., 2004), split and prepared as the LD paper did.

LD calls this set RITE. Its split (``ld-splits/Vessel_RITE.csv``) trains on images 21-40 in numeric order
and tests on 01-20. Each image is cropped to its fundus region (LD's rule) and resized to 512x512; its
label gets the same box. Prepared arrays are cached on disk, keyed by the files' names, sizes and
modification times, the task version and the preprocessing parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssl_bench.api import (
    Availability,
    DataError,
    SegmentationData,
    SegmentationSplit,
    Task,
    crop,
    fundus_roi_box,
    hookimpl,
    prepared_arrays,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)

URL = "https://drive.grand-challenge.org/"
#: Preprocessing parameters; they are part of the cache key.
PREPARATION = {"size": 512, "roi_threshold": 20, "roi_margin": 16, "label_threshold": 128}
#: LD's split: the csv lists the training images 21, 22, ..., 40 in this order (it sets the validation
#: prefix) and the test images 01, ..., 20.
SPLIT_IDS = {
    "train": tuple(f"{i:02d}" for i in range(21, 41)),
    "test": tuple(f"{i:02d}" for i in range(1, 21)),
}
_FOLDER = {"train": "training", "test": "test"}


def image_path(root: Path, split: str, image_id: str) -> Path:
    folder = _FOLDER[split]
    return root / folder / "images" / f"{image_id}_{folder}.tif"


def label_path(root: Path, split: str, image_id: str) -> Path:
    return root / _FOLDER[split] / "1st_manual" / f"{image_id}_manual1.gif"


def find_root(data_root: Path | None) -> Path | None:
    """The DRIVE folder: ``data_root/DRIVE``, or ``data_root`` itself when it holds training/ and test/."""
    if data_root is None:
        return None
    for candidate in (Path(data_root) / "DRIVE", Path(data_root)):
        if (candidate / "training").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _files(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    return [(i, image_path(root, split, i), label_path(root, split, i)) for i in SPLIT_IDS[split]]


def _all_files(root: Path) -> list[Path]:
    return [path for split in SPLIT_IDS for _, image, label in _files(root, split) for path in (image, label)]


class DriveVessel(Task):
    name = "drive-vessel"
    description = "DRIVE retinal vessels: 20 train (21-40) / 20 test (01-20) fundus images at 512x512"
    modality = "fundus"
    channels = 3
    target = "retinal vessels"
    rotation_degrees = 180.0
    url = URL
    licence = "research use under DRIVE's terms (see the download page)"
    citation = (
        "J. Staal, M. D. Abràmoff, M. Niemeijer, M. A. Viergever, B. van Ginneken: Ridge-based vessel "
        "segmentation in color images of the retina. IEEE Transactions on Medical Imaging 23(4):501-509, 2004"
    )
    expected_counts = (20, 20)
    version = "1"

    def availability(self, data_root: Path | None) -> Availability:
        if data_root is None:
            return Availability.missing(f"no data folder given: download DRIVE from {URL}")
        root = find_root(data_root)
        if root is None:
            return Availability.missing(
                f"DRIVE not found: neither {Path(data_root) / 'DRIVE'} nor {data_root} has training/ and "
                f"test/ folders; download DRIVE from {URL}"
            )
        absent = [path for path in _all_files(root) if not path.is_file()]
        if not absent:
            return Availability.found()
        if all(path.parent == root / "test" / "1st_manual" for path in absent):
            return Availability.missing(_no_test_labels(root))
        return Availability.missing(
            f"{len(absent)} DRIVE file(s) missing, first {absent[0]}; download DRIVE again from {URL}"
        )

    def load(self, data_root: Path | None) -> SegmentationData:
        available, root = self.availability(data_root), find_root(data_root)
        if not available.ok or root is None:
            raise DataError(available.reason)
        arrays = prepared_arrays(self.name, _all_files(root), root, self.version, PREPARATION, lambda: _prepare(root))
        return SegmentationData(
            train=_split(arrays["train_images"], arrays["train_masks"], SPLIT_IDS["train"]),
            test=_split(arrays["test_images"], arrays["test_masks"], SPLIT_IDS["test"]),
        )


def _no_test_labels(root: Path) -> str:
    return (
        f"DRIVE test labels missing ({root / 'test' / '1st_manual'}/NN_manual1.gif): the current "
        f"grand-challenge download has no test labels, so the test split cannot be scored; copy "
        f"test/1st_manual from the original 2004 DRIVE release (Image Sciences Institute, UMC Utrecht, "
        f"or a mirror of it) into {root / 'test'}"
    )


def _split(images: np.ndarray, masks: np.ndarray, ids: tuple[str, ...]) -> SegmentationSplit:
    return SegmentationSplit(torch.from_numpy(images), torch.from_numpy(masks), ids)


def _prepare(root: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for split in SPLIT_IDS:
        pairs = [_prepare_pair(image, label) for _, image, label in _files(root, split)]
        arrays[f"{split}_images"] = np.stack([image for image, _ in pairs]).transpose(0, 3, 1, 2).copy()
        arrays[f"{split}_masks"] = np.stack([mask for _, mask in pairs])
    return arrays


def _prepare_pair(image_file: Path, label_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """LD's preprocessing: crop both to the image's fundus box, resize to 512, re-binarise the label."""
    try:
        image = read_image(image_file, channels=3)
        label = read_mask(label_file, PREPARATION["label_threshold"])
    except DataError as error:
        raise DataError(f"{error}. Replace it with an intact copy of DRIVE ({URL}).") from error
    if label.shape != image.shape[:2]:
        raise DataError(f"{label_file} is {label.shape} but its image {image_file} is {image.shape[:2]}")
    box = fundus_roi_box(image, PREPARATION["roi_threshold"], PREPARATION["roi_margin"])
    size = PREPARATION["size"]
    return resize_image(crop(image, box), size), resize_mask(crop(label, box), size)


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(DriveVessel())
