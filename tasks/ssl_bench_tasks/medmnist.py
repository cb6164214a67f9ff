"""MedMNIST v2 2-D classification (Yang et al., Scientific Data 2023): any ``<flag>.npz`` of the release.

Each file holds ``{train,val,test}_images`` (N, 28, 28[, 3]) uint8 and ``{train,val,test}_labels`` (N, L).
Files are found as ``<data_root>/MedMNIST/<flag>.npz`` or ``<data_root>/<flag>.npz``; the larger-image
variants (``<flag>_64.npz``, ``_128``, ``_224``) are used when the 28-pixel file is absent. Each set is its
own modality, so that a method is pretrained on that set's training images only.

Labels are checked when a file loads, before anything trains: whole numbers within the set's classes (0 or 1
per label for the multi-label ChestMNIST), no split empty, and a test split with at least two classes (else AUC
is undefined); anything else is a :class:`DataError` naming the file, the split and the values found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_bench.api import Availability, ClassificationData, ClassificationSplit, DataError, Task, hookimpl

URL = "https://medmnist.com/ (files on Zenodo: https://zenodo.org/records/10519652)"
CITATION = (
    "J. Yang, R. Shi, D. Wei, Z. Liu, L. Zhao, B. Ke, H. Pfister, B. Ni: MedMNIST v2 - A large-scale lightweight "
    "benchmark for 2D and 3D biomedical image classification. Scientific Data 10:41, 2023"
)
SPLITS = ("train", "val", "test")
SIZES = ("", "_64", "_128", "_224")


@dataclass(frozen=True)
class Flag:
    name: str
    target: str
    channels: int
    classes: int
    counts: tuple[int, int]  # official (train, test)
    multi_label: bool = False


FLAGS = (
    Flag("pathmnist", "colon pathology tissue type", 3, 9, (89996, 7180)),
    Flag("chestmnist", "14 chest X-ray findings", 1, 14, (78468, 22433), multi_label=True),
    Flag("dermamnist", "dermatoscopic lesion type", 3, 7, (7007, 2005)),
    Flag("octmnist", "retinal OCT diagnosis", 1, 4, (97477, 1000)),
    Flag("pneumoniamnist", "pneumonia on chest X-ray", 1, 2, (4708, 624)),
    Flag("retinamnist", "diabetic retinopathy grade", 3, 5, (1080, 400)),
    Flag("breastmnist", "breast ultrasound malignancy", 1, 2, (546, 156)),
    Flag("bloodmnist", "blood cell type", 3, 8, (11959, 3421)),
    Flag("tissuemnist", "kidney cortex cell type", 1, 8, (165466, 47280)),
    Flag("organamnist", "abdominal CT organ (axial)", 1, 11, (34561, 17778)),
    Flag("organcmnist", "abdominal CT organ (coronal)", 1, 11, (12975, 8216)),
    Flag("organsmnist", "abdominal CT organ (sagittal)", 1, 11, (13932, 8827)),
)


class MedMNISTTask(Task):
    kind = "classification"
    url = URL
    licence = "CC BY 4.0 (most sets; see medmnist.com)"
    citation = CITATION
    version = "1"

    def __init__(self, flag: Flag) -> None:
        self.flag = flag
        self.name = flag.name
        self.description = (
            f"MedMNIST {flag.name}: {flag.target}, {flag.classes} {'labels' if flag.multi_label else 'classes'}"
        )
        self.modality = f"medmnist-{flag.name}"
        self.channels = flag.channels
        self.target = flag.target
        self.classes = flag.classes
        self.multi_label = flag.multi_label
        self.expected_counts = flag.counts

    def _file(self, data_root: Path | None) -> Path | None:
        if data_root is None:
            return None
        for folder in (Path(data_root) / "MedMNIST", Path(data_root)):
            for size in SIZES:
                if (candidate := folder / f"{self.flag.name}{size}.npz").is_file():
                    return candidate
        return None

    def availability(self, data_root: Path | None) -> Availability:
        if self._file(data_root) is None:
            where = f"{data_root}/MedMNIST/" if data_root else "--data-root/MedMNIST/"
            return Availability.missing(f"no {self.flag.name}.npz in {where}; download it from {URL}")
        return Availability.found()

    def load(self, data_root: Path | None) -> ClassificationData:
        path = self._file(data_root)
        if path is None:
            raise DataError(self.availability(data_root).reason)
        try:
            with np.load(path, allow_pickle=False) as stored:
                splits = {split: self._split(stored, split, path) for split in SPLITS}
        except (OSError, ValueError, KeyError) as error:
            raise DataError(
                f"{path} is not a readable MedMNIST file ({error}); download it again from {URL}"
            ) from error
        self._refuse_one_class_test(splits["test"].labels, path)
        return ClassificationData(**splits)

    def _split(self, stored, split: str, path: Path) -> ClassificationSplit:
        images, labels = stored[f"{split}_images"], stored[f"{split}_labels"]
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4:
            images = images.transpose(0, 3, 1, 2)
        if images.dtype != np.uint8 or images.shape[1] != self.channels or len(labels) != len(images):
            raise DataError(
                f"{path}: {split}_images {images.dtype} {images.shape} with {len(labels)} labels; expected uint8 "
                f"with {self.channels} channel(s) and one label row per image"
            )
        if len(images) == 0:
            raise DataError(f"{path}: the {split} split has no images; download {path.name} again from {URL}")
        ids = tuple(f"{split}{i:06d}" for i in range(len(images)))
        return ClassificationSplit(
            torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(self._labels(labels, split, path)), ids
        )

    def _labels(self, labels: np.ndarray, split: str, path: Path) -> np.ndarray:
        """``labels`` as ``int64 (N, L)`` once checked against the declared classes: wrong labels train without
        error (-1, one class) or fail inside torch far from the file, so they are refused here."""
        flag, columns = self.flag, self.flag.classes if self.flag.multi_label else 1
        where = f"{path}: {split}_labels"
        fix = f"fix them or download {path.name} again from {URL}"
        if labels.ndim == 1 and columns == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or labels.shape[1] != columns or labels.dtype.kind not in "biuf":
            raise DataError(
                f"{where} are {labels.dtype} {labels.shape}, expected whole numbers of shape (N, {columns}); {fix}"
            )
        if labels.dtype.kind == "f":
            bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
            if bad.size:
                raise DataError(f"{where} hold non-integer values {_few(bad)}, expected class indices; {fix}")
        allowed = "0 or 1 (one column per label)" if flag.multi_label else f"0..{flag.classes - 1}"
        bad = labels[(labels < 0) | (labels > (1 if flag.multi_label else flag.classes - 1))]
        if bad.size:
            meaning = f"{flag.classes} labels" if flag.multi_label else f"{flag.classes} classes"
            raise DataError(f"{where} hold {_few(bad)}, expected {allowed} ({flag.name} has {meaning}); {fix}")
        return labels.astype(np.int64)

    def _refuse_one_class_test(self, labels: torch.Tensor, path: Path) -> None:
        """AUC needs positives and negatives: a test split of one class scores NaN (and accuracy 1.0)."""
        if self.flag.multi_label:
            mixed = bool(((labels == 0).any(dim=0) & (labels == 1).any(dim=0)).any())
        else:
            mixed = len(torch.unique(labels)) >= 2
        if not mixed:
            found = ", ".join(str(value) for value in torch.unique(labels).tolist())
            what = "every label is all 0 or all 1" if self.flag.multi_label else f"every image is of class {found}"
            raise DataError(
                f"{path}: test_labels hold one class only ({what}), expected at least two, which AUC needs; "
                f"use the release's test split (download {path.name} again from {URL})"
            )


def _few(values: np.ndarray) -> str:
    """A few distinct ``values`` for a message: ``-1, 7`` or ``-3, -2, -1, 7, 8, ... (12 distinct values)``."""
    distinct = np.unique(values)
    shown = ", ".join(str(value) for value in distinct[:5].tolist())
    return shown if len(distinct) <= 5 else f"{shown}, ... ({len(distinct)} distinct values)"


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    for flag in FLAGS:
        register(MedMNISTTask(flag))
