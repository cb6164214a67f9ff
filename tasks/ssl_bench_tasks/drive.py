"""DRIVE retinal vessel segmentation (Staal et al., 2004), split and prepared as the LD paper did.

LD calls this set RITE. Its split (``ld-splits/Vessel_RITE.csv``) trains on images 21-40 in numeric order
and tests on 01-20. Labels are the first observer's (``1st_manual``). Preparation: LD's fundus protocol
(see :mod:`ssl_bench_tasks._prepared`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import FUNDUS, PreparedTask, Sample

URL = "https://drive.grand-challenge.org/"
#: LD's split: the training images 21, 22, ..., 40 in this order (it sets the validation prefix), and the
#: test images 01, ..., 20.
SPLIT_IDS = {
    "train": tuple(f"{i:02d}" for i in range(21, 41)),
    "test": tuple(f"{i:02d}" for i in range(1, 21)),
}
_FOLDER = {"train": "training", "test": "test"}


class DriveVessel(PreparedTask):
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
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (20, 20)
    version = "2"  # 2: the fundus ROI is 8-connected, as in LD
    dataset = "DRIVE"
    root_candidates = ("DRIVE", "")
    root_markers = ("training", "test")
    preparation = FUNDUS
    shape_source = "chase-vessel"  # the paper's shape-guided vessels, here guided by the other fundus set's masks

    def samples(self, root: Path, split: str) -> list[Sample]:
        folder = root / _FOLDER[split]
        return [
            Sample(
                image_id,
                folder / "images" / f"{image_id}_{_FOLDER[split]}.tif",
                (folder / "1st_manual" / f"{image_id}_manual1.gif",),
            )
            for image_id in SPLIT_IDS[split]
        ]

    def missing_files_reason(self, root: Path, absent: list[Path]) -> str:
        test_labels = root / "test" / "1st_manual"
        # The grand-challenge download lacks them all; a few missing is a damaged copy, named by the general rule.
        if len(absent) == len(SPLIT_IDS["test"]) and all(path.parent == test_labels for path in absent):
            return (
                f"DRIVE test labels missing ({test_labels}/NN_manual1.gif): the current grand-challenge "
                f"download has no test labels, so the test split cannot be scored; copy test/1st_manual from "
                f"the original 2004 DRIVE release (Image Sciences Institute, UMC Utrecht, or a mirror of it) "
                f"into {root / 'test'}"
            )
        return super().missing_files_reason(root, absent)


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(DriveVessel())
