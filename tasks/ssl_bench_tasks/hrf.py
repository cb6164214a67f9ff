"""HRF (High-Resolution Fundus) retinal vessel segmentation (Budai et al., 2013), split and prepared as LD did.

The owners ship ``images/01_dr.JPG`` (only the diabetic-retinopathy ``_dr`` images have an upper-case
extension; ``_g`` healthy and ``_h`` glaucoma ones are ``.jpg``, so extensions match without case) and
``manual1/01_dr.tif``; 15 patients per class, 45 images of 3504x2336. HRF has no official split: LD's
(``ld-splits/Vessel_HRF.csv``) trains on the first 25 ids in sorted order (01_dr ... 09_dr) with 07_g
moved to the front, and tests on the other 20 in sorted order. Preparation: LD's fundus protocol, except that
the resized masks are re-binarised where they exceed 0.01 * 255 (0.3 elsewhere), as LD's HRF preprocessing does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import FUNDUS, PreparedTask, Sample, find_file, ld_order

URL = "https://www5.cs.fau.de/research/data/fundus-images/"
#: LD's preprocessing_HRF keeps a resized mask where it exceeds 0.01 * 255 (its other datasets: 0.3).
HRF_RESIZE_THRESHOLD = 0.01
_SORTED_IDS = tuple(f"{patient:02d}_{condition}" for patient in range(1, 16) for condition in ("dr", "g", "h"))
SPLIT_IDS = {"train": ld_order(("07_g",), _SORTED_IDS[:25]), "test": _SORTED_IDS[25:]}


class HrfVessel(PreparedTask):
    name = "hrf-vessel"
    description = "HRF retinal vessels (manual1): 25 train / 20 test high-resolution fundus images at 512x512"
    modality = "fundus"
    channels = 3
    target = "retinal vessels"
    rotation_degrees = 180.0
    url = URL
    licence = "research use under the owners' terms (see the HRF page)"
    citation = (
        "A. Budai, R. Bock, A. Maier, J. Hornegger, G. Michelson: Robust vessel segmentation in fundus images. "
        "International Journal of Biomedical Imaging 2013:154860, 2013"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (25, 20)
    version = "2"  # 2: masks re-binarised at 0.01 and an 8-connected fundus ROI, as in LD
    dataset = "HRF"
    root_candidates = ("HRF", "hrf", "")
    root_markers = ("images", "manual1")
    preparation = dataclasses.replace(FUNDUS, resize_threshold=HRF_RESIZE_THRESHOLD)

    def samples(self, root: Path, split: str) -> list[Sample]:
        return [
            Sample(
                image_id,
                find_file(root / "images", _owners_image_name(image_id), ignore_case=True),
                (root / "manual1" / f"{image_id}.tif",),
            )
            for image_id in SPLIT_IDS[split]
        ]


def _owners_image_name(image_id: str) -> str:
    return f"{image_id}.JPG" if image_id.endswith("_dr") else f"{image_id}.jpg"


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(HrfVessel())
