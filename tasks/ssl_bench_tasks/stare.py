"""STARE retinal vessel segmentation (Hoover et al., 2000), split and prepared as the LD paper did.

The owners ship gzipped PPM files (``im0001.ppm.gz``) in archives without folders; the usual folders are
``stare-images/`` and ``labels-ah/`` (``im0001.ah.ppm.gz``, Adam Hoover's labels, the observer LD used).
Files are accepted gzipped or not. Labels are not always exactly 0/255: a pixel is vessel where channel 0
is >= 128. Only 20 images are labelled; LD's split (``ld-splits/Vessel_STARE.csv``) trains on ten and
tests on the other ten, each list in numeric order. Preparation: LD's fundus protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import FUNDUS, PreparedTask, Sample, find_file

URL = "https://cecas.clemson.edu/~ahoover/stare/"
#: LD's split, by image number, in LD's order.
SPLIT_NUMBERS = {
    "train": (1, 2, 3, 4, 5, 44, 77, 81, 82, 139),
    "test": (162, 163, 235, 236, 239, 240, 255, 291, 319, 324),
}


class StareVessel(PreparedTask):
    name = "stare-vessel"
    description = "STARE retinal vessels (labels-ah): 10 train / 10 test fundus images at 512x512"
    modality = "fundus"
    channels = 3
    target = "retinal vessels"
    rotation_degrees = 180.0
    url = URL
    licence = "research use; cite the owners (see the STARE page)"
    citation = (
        "A. Hoover, V. Kouznetsova, M. Goldbaum: Locating blood vessels in retinal images by piecewise "
        "threshold probing of a matched filter response. IEEE Transactions on Medical Imaging 19(3):203-210, 2000"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (10, 10)
    version = "2"  # 2: the fundus ROI is 8-connected, as in LD
    dataset = "STARE"
    root_candidates = ("STARE", "stare", "")
    root_markers = ("stare-images", "labels-ah")
    preparation = FUNDUS

    def samples(self, root: Path, split: str) -> list[Sample]:
        return [_sample(root, f"im{number:04d}") for number in SPLIT_NUMBERS[split]]


def _sample(root: Path, image_id: str) -> Sample:
    image = find_file(root / "stare-images", f"{image_id}.ppm.gz", f"{image_id}.ppm", ignore_case=True)
    label = find_file(root / "labels-ah", f"{image_id}.ah.ppm.gz", f"{image_id}.ah.ppm", ignore_case=True)
    return Sample(image_id, image, (label,))


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(StareVessel())
