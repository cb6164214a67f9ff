"""IDRiD optic disc and hard exudate segmentation (Porwal et al., 2018), split and prepared as LD did.

The owners' segmentation part unpacks to ``A. Segmentation/`` (folder names with spaces):
``1. Original Images/{a. Training Set,b. Testing Set}/IDRiD_01.jpg`` (4288x2848) and
``2. All Segmentation Groundtruths/{a. Training Set,b. Testing Set}/{3. Hard Exudates,5. Optic Disc}/
IDRiD_01_{EX,OD}.tif``. Masks mark the structure on black; any non-zero value of the first channel
counts. Not every image has every lesion: an image without a hard exudate file has an empty exudate mask
(the disc files are all required). Split: the official 54 training (01-54) / 27 test (55-81) images, in
LD's order (``ld-splits/OD_IDRID.csv`` and ``Hard_Exudates_IDRID.csv``: training 18 and 36 first, then
numeric). Preparation: LD's fundus protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from ssl_bench.api import hookimpl
from ssl_bench_tasks._prepared import DiscLandmarks, Preparation, PreparedTask, Sample, ld_order

URL = "https://idrid.grand-challenge.org/"
SPLIT_IDS = {
    "train": ld_order(("IDRiD_18", "IDRiD_36"), (f"IDRiD_{number:02d}" for number in range(1, 55))),
    "test": tuple(f"IDRiD_{number:02d}" for number in range(55, 82)),
}
_SET = {"train": "a. Training Set", "test": "b. Testing Set"}
_SEGMENTATION = Path("A. Segmentation")
_IMAGES = _SEGMENTATION / "1. Original Images"
_GROUND_TRUTHS = _SEGMENTATION / "2. All Segmentation Groundtruths"


class _IdridTask(PreparedTask):
    """IDRiD's segmentation part with one structure's masks as labels; subclasses name the structure."""

    #: The structure's ground-truth folder and file suffix, e.g. ``5. Optic Disc`` and ``OD``.
    label_folder: ClassVar[str]
    label_suffix: ClassVar[str]
    modality = "fundus"
    channels = 3
    rotation_degrees = 180.0
    url = URL
    licence = "CC BY 4.0"
    citation = (
        "P. Porwal, S. Pachade, R. Kamble, M. Kokare, G. Deshmukh, V. Sahasrabuddhe, F. Meriaudeau: Indian "
        "Diabetic Retinopathy Image Dataset (IDRiD): a database for diabetic retinopathy screening research. "
        "Data 3(3):25, 2018"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (54, 27)
    version = "2"  # 2: the fundus ROI is 8-connected, as in LD
    dataset = "IDRiD"
    root_candidates = ("IDRiD", "IDRID", "")
    root_markers = (str(_IMAGES), str(_GROUND_TRUTHS))
    preparation = Preparation(fundus_crop=True, label_threshold=1)

    def samples(self, root: Path, split: str) -> list[Sample]:
        images = root / _IMAGES / _SET[split]
        labels = root / _GROUND_TRUTHS / _SET[split] / self.label_folder
        return [
            Sample(image_id, images / f"{image_id}.jpg", (labels / f"{image_id}_{self.label_suffix}.tif",))
            for image_id in SPLIT_IDS[split]
        ]


class IdridDisc(DiscLandmarks, _IdridTask):
    name = "idrid-disc"
    description = "IDRiD optic disc: 54 train / 27 test fundus images at 512x512"
    target = "optic disc"
    label_folder = "5. Optic Disc"
    label_suffix = "OD"


class IdridExudates(_IdridTask):
    """Hard exudates; an image without an ``_EX.tif`` file has an empty mask."""

    name = "idrid-exudates"
    description = "IDRiD hard exudates (absent file: empty mask): 54 train / 27 test fundus images at 512x512"
    target = "hard exudates"
    label_folder = "3. Hard Exudates"
    label_suffix = "EX"
    optional_labels = True


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(IdridDisc())
    register(IdridExudates())
