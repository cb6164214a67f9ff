"""Dermoscopy skin lesions: PH2 (Mendonça et al., 2013) and ISIC 2018 task 1 (Codella et al., 2019).

PH2 ships one folder per case, ``PH2Dataset/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp`` with
its lesion mask in ``IMD002_lesion/IMD002_lesion.bmp``; 200 images, no official split: the seeded split of
:func:`ssl_bench_tasks._files.seeded_split`. ISIC 2018 ships flat folders,
``ISIC2018_Task1-2_Training_Input/ISIC_0000000.jpg`` with
``ISIC2018_Task1_Training_GroundTruth/ISIC_0000000_segmentation.png``, and the test set likewise (``_Test_``);
those folders also hold ``ATTRIBUTION.txt``, ``LICENSE.txt`` and task 2's ``*_superpixels.png``, which are
ignored. Official split: 2594 training / 1000 test images; the training list is in the order of
:func:`ssl_bench_tasks._files.seeded_order`. Images and masks are resized to 512x512.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._files import image_files, seeded_order, seeded_split, split_counts
from ssl_bench_tasks._prepared import PreparedTask, Sample

PH2_CASES = "PH2 Dataset images"
#: ISIC 2018 task 1 folders per split: (inputs, ground truth).
ISIC_FOLDERS = {
    "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
    "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
}


class _DermoscopyTask(PreparedTask):
    modality = "dermoscopy"
    channels = 3
    target = "skin lesion"
    rotation_degrees = 180.0
    version = "1"


class Ph2Lesion(_DermoscopyTask):
    name = "ph2-lesion"
    description = "PH2 dermoscopy skin lesions: 200 images, seeded 160 / 40 split, 512x512"
    url = "https://www.fc.up.pt/addi/ph2%20database.html"
    licence = "research use; cite the owners (see the PH2 page)"
    citation = (
        "T. Mendonça, P. M. Ferreira, J. S. Marques, A. R. S. Marcal, J. Rozeira: PH2 - A dermoscopic image "
        "database for research and benchmarking. IEEE EMBC 2013:5437-5440"
    )
    expected_counts = split_counts(200)
    dataset = "PH2"
    root_candidates = ("PH2Dataset", "")
    root_markers = (PH2_CASES,)

    def samples(self, root: Path, split: str) -> list[Sample]:
        cases = root / PH2_CASES
        return [_ph2_sample(cases / case) for case in seeded_split(ph2_cases(cases))[split]]


def ph2_cases(cases: Path) -> list[str]:
    """The case folders (``IMD002``...) in PH2's image folder."""
    return sorted(path.name for path in cases.iterdir() if path.is_dir())


def _ph2_sample(case: Path) -> Sample:
    name = case.name
    image = case / f"{name}_Dermoscopic_Image" / f"{name}.bmp"
    return Sample(name, image, (case / f"{name}_lesion" / f"{name}_lesion.bmp",))


class Isic2018Lesion(_DermoscopyTask):
    name = "isic2018-lesion"
    description = "ISIC 2018 task 1 dermoscopy skin lesions: 2594 train / 1000 test images, 512x512"
    url = "https://challenge.isic-archive.com/data/#2018"
    licence = "CC BY-NC 4.0"
    citation = (
        "N. Codella, V. Rotemberg, P. Tschandl, M. E. Celebi, S. Dusza, D. Gutman, B. Helba, A. Kalloo, "
        "K. Liopyris, M. Marchetti, H. Kittler, A. Halpern: Skin lesion analysis toward melanoma detection 2018: "
        "a challenge hosted by the International Skin Imaging Collaboration (ISIC). arXiv:1902.03368, 2019"
    )
    expected_counts = (2594, 1000)
    dataset = "ISIC 2018 task 1"
    root_candidates = ("ISIC2018", "")
    root_markers = tuple(folder for folders in ISIC_FOLDERS.values() for folder in folders)

    def samples(self, root: Path, split: str) -> list[Sample]:
        inputs, truths = ISIC_FOLDERS[split]
        images = image_files(root / inputs, extensions=frozenset({".jpg"}))
        ids = seeded_order(images) if split == "train" else sorted(images)
        return [Sample(i, images[i], (root / truths / f"{i}_segmentation.png",)) for i in ids]


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(Ph2Lesion())
    register(Isic2018Lesion())
