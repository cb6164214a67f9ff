"""CHASE_DB1 retinal vessel segmentation (Fraz et al., 2012), split and prepared as the LD paper did.

The owners ship one flat folder: ``Image_01L.jpg`` (999x960 RGB) with the first observer's label
``Image_01L_1stHO.png`` (1-bit; LD used this observer) and the second's ``_2ndHO.png``. LD's split
(``ld-splits/Vessel_CHASEDB.csv``) trains on children 01-10 and tests on 11-14, left eye before right.
CHASE_DB1 has no field-of-view mask: LD's fundus protocol derives the crop from the image itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import FUNDUS, PreparedTask, Sample

URL = "https://researchdata.kingston.ac.uk/96/"
#: LD's split: the children's numbers; each gives a left (L) then a right (R) eye image.
SPLIT_CHILDREN = {"train": range(1, 11), "test": range(11, 15)}


class ChaseVessel(PreparedTask):
    name = "chase-vessel"
    description = "CHASE_DB1 retinal vessels (1stHO): 20 train (01-10) / 8 test (11-14) fundus images at 512x512"
    modality = "fundus"
    channels = 3
    target = "retinal vessels"
    rotation_degrees = 180.0
    url = URL
    licence = "CC BY 4.0"
    citation = (
        "M. M. Fraz, P. Remagnino, A. Hoppe, B. Uyyanonvara, A. R. Rudnicka, C. G. Owen, S. A. Barman: An "
        "ensemble classification-based approach applied to retinal blood vessel segmentation. IEEE "
        "Transactions on Biomedical Engineering 59(9):2538-2548, 2012"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (20, 8)
    version = "2"  # 2: the fundus ROI is 8-connected, as in LD
    dataset = "CHASE_DB1"
    root_candidates = ("CHASE_DB1", "CHASEDB1", "")
    root_markers = ("Image_01L.jpg",)
    preparation = FUNDUS
    shape_source = "drive-vessel"  # the paper's shape-guided vessels, here guided by the other fundus set's masks

    def samples(self, root: Path, split: str) -> list[Sample]:
        ids = [f"Image_{child:02d}{eye}" for child in SPLIT_CHILDREN[split] for eye in "LR"]
        return [Sample(image_id, root / f"{image_id}.jpg", (root / f"{image_id}_1stHO.png",)) for image_id in ids]


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(ChaseVessel())
