"""MedMNIST v2 2-D classification (Yang et al., Scientific Data 2023): any ``<flag>.npz`` of the release.

Each file holds ``{train,val,test}_images`` (N, 28, 28[, 3]) uint8 and ``{train,val,test}_labels`` (N, L).
Files are found as ``<data_root>/MedMNIST/<flag>.npz`` or ``<data_root>/<flag>.npz``; the larger-image
variants (``<flag>_64.npz``, ``_128``, ``_224``) are used when the 28-pixel file is absent. Each set is its
own modality, so that a method is pretrained on that set's training images only.
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
        ids = tuple(f"{split}{i:06d}" for i in range(len(images)))
        return ClassificationSplit(
            torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64)), ids
        )


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    for flag in FLAGS:
        register(MedMNISTTask(flag))
