"""Drishti-GS1 optic disc and optic cup segmentation (Sivaswamy et al., 2014), split and prepared as LD did.

The owners ship ``Drishti-GS1_files/Training/Images/drishtiGS_002.png`` with soft maps
``Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_{OD,cup}segSoftmap.png``, and ``Test/Images`` with
``Test/Test_GT/<id>/SoftMap/``; some copies unpack with a doubled ``Drishti-GS1_files/Drishti-GS1_files/``.
A soft map holds, per pixel, the share of the expert annotators who marked it (0-255). Binarisation rule:
a pixel is in the disc (cup) where its soft map value is > 127, i.e. a majority of the annotators marked it.
Split: the official 50 training / 51 test images, in LD's order (``ld-splits/OD_Drishti-GS1.csv`` and
``CUP_...``: training 036 first, test 029 and 072 first, then each in numeric order). Preparation: LD's
fundus protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import DiscLandmarks, Preparation, PreparedTask, Sample, ld_order

URL = "http://cvit.iiit.ac.in/projects/mip/drishti-gs/mip-dataset2/Home.php"
_TRAINING_NUMBERS = (
    *(2, 4, 8, 10, 12, 15, 16, 17, 18, 22, 24, 26, 31, 32, 33, 35, 36, 37, 38, 40, 41, 42, 44, 45, 46),
    *(47, 49, 51, 57, 58, 60, 61, 62, 63, 64, 66, 68, 69, 75, 76, 80, 81, 84, 88, 89, 90, 92, 94, 98, 101),
)
_TRAINING_IDS = {f"drishtiGS_{number:03d}" for number in _TRAINING_NUMBERS}
_TEST_IDS = {f"drishtiGS_{number:03d}" for number in range(1, 102)} - _TRAINING_IDS
SPLIT_IDS = {
    "train": ld_order(("drishtiGS_036",), _TRAINING_IDS),
    "test": ld_order(("drishtiGS_029", "drishtiGS_072"), _TEST_IDS),
}
#: Where each split's images and ground-truth folders are, relative to the dataset's folder.
_FOLDERS = {"train": ("Training/Images", "Training/GT"), "test": ("Test/Images", "Test/Test_GT")}
#: A soft map value above 127 of 255: a majority of the annotators.
SOFT_MAP_THRESHOLD = 128


class _DrishtiTask(PreparedTask):
    """Drishti-GS1 with one structure's soft maps as labels; subclasses name the structure."""

    #: The soft map's name part: ``OD`` or ``cup``.
    structure: ClassVar[str]
    modality = "fundus"
    channels = 3
    rotation_degrees = 180.0
    url = URL
    licence = "research use under the owners' terms (see the Drishti-GS page)"
    citation = (
        "J. Sivaswamy, S. R. Krishnadas, G. D. Joshi, M. Jain, A. U. S. Tabish: Drishti-GS: Retinal image "
        "dataset for optic nerve head (ONH) segmentation. IEEE ISBI 2014, pp. 53-56"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (50, 51)
    version = "2"  # 2: the fundus ROI is 8-connected, as in LD
    dataset = "Drishti-GS1"
    root_candidates = ("Drishti-GS1_files/Drishti-GS1_files", "Drishti-GS1_files", "Drishti-GS1", "")
    root_markers = ("Training/Images", "Test/Images")
    preparation = Preparation(fundus_crop=True, label_threshold=SOFT_MAP_THRESHOLD)

    def samples(self, root: Path, split: str) -> list[Sample]:
        images, ground_truth = (root / folder for folder in _FOLDERS[split])
        return [
            Sample(
                image_id,
                images / f"{image_id}.png",
                (ground_truth / image_id / "SoftMap" / f"{image_id}_{self.structure}segSoftmap.png",),
            )
            for image_id in SPLIT_IDS[split]
        ]


class DrishtiDisc(DiscLandmarks, _DrishtiTask):
    name = "drishti-disc"
    description = "Drishti-GS1 optic disc (soft maps > 127): 50 train / 51 test fundus images at 512x512"
    target = "optic disc"
    structure = "OD"


class DrishtiCup(_DrishtiTask):
    name = "drishti-cup"
    description = "Drishti-GS1 optic cup (soft maps > 127): 50 train / 51 test fundus images at 512x512"
    target = "optic cup"
    structure = "cup"


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(DrishtiDisc())
    register(DrishtiCup())
