"""Montgomery County and Shenzhen chest X-rays with lung masks (Jaeger et al., 2014).

Montgomery ships ``MontgomerySet/CXR_png/MCUCXR_0001_0.png`` with the two lungs drawn separately in
``ManualMask/leftMask/`` and ``ManualMask/rightMask/`` (same names), merged here; 138 images. Shenzhen ships
``ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png`` (662 images); its lung masks are a third-party release for 566
of them, ``CHNCXR_0001_0_mask.png`` in ``mask/`` or ``masks/`` beside ``CXR_png``: only images with a mask
are used. That release also ships as ``Lung Segmentation/`` with the Montgomery images in its ``CXR_png``:
only ``CHNCXR_*`` images count. Neither set has an official split: both use the seeded split of
:func:`ssl_bench_tasks._files.seeded_split`. Images and masks are resized to 512x512.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ssl_bench.api import hookimpl
from ssl_bench_tasks._files import image_files, seeded_split, split_counts
from ssl_bench_tasks._prepared import LungLandmarks, Sample, XRayTask

URL = "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets"
CITATION = (
    "S. Jaeger, S. Candemir, S. Antani, Y.-X. J. Wáng, P.-X. Lu, G. Thoma: Two public chest X-ray datasets for "
    "computer-aided screening of pulmonary diseases. Quantitative Imaging in Medicine and Surgery 4(6):475-477, 2014"
)
SHENZHEN_MASK_FOLDERS = ("mask", "masks")
SHENZHEN_PREFIX = "CHNCXR_"


class MontgomeryLung(LungLandmarks, XRayTask):
    name = "montgomery-lung"
    description = "Montgomery County chest X-rays: both lungs, 138 images, seeded 111 / 27 split, 512x512"
    target = "lungs (left + right)"
    url = URL
    licence = "public release of the U.S. National Library of Medicine; cite the owners"
    citation = CITATION
    expected_counts = split_counts(138)
    version = "1"
    dataset = "Montgomery"
    root_candidates = ("MontgomerySet", "NLM-MontgomeryCXRSet/MontgomerySet", "")
    root_markers = ("CXR_png", "ManualMask/leftMask", "ManualMask/rightMask")

    def samples(self, root: Path, split: str) -> list[Sample]:
        images = image_files(root / "CXR_png")
        masks = root / "ManualMask"
        return [
            Sample(
                image_id,
                images[image_id],
                (masks / "leftMask" / f"{image_id}.png", masks / "rightMask" / f"{image_id}.png"),
            )
            for image_id in seeded_split(images)[split]
        ]


class ShenzhenLung(LungLandmarks, XRayTask):
    name = "shenzhen-lung"
    description = "Shenzhen chest X-rays: both lungs, the 566 images with masks, seeded 453 / 113 split, 512x512"
    target = "lungs"
    url = URL
    licence = "images: public release of the U.S. National Library of Medicine; masks: CC BY-NC-SA 4.0"
    citation = CITATION
    expected_counts = split_counts(566)
    version = "1"
    dataset = "Shenzhen"
    root_candidates = ("ChinaSet_AllFiles", "Lung Segmentation", "")
    root_markers = ("CXR_png",)

    def samples(self, root: Path, split: str) -> list[Sample]:
        images = {i: path for i, path in image_files(root / "CXR_png").items() if i.startswith(SHENZHEN_PREFIX)}
        mask_folder = shenzhen_mask_folder(root)
        masks = image_files(mask_folder, "_mask")
        # Without any mask folder every image lacks its mask, and load names the first.
        labelled = {image_id: path for image_id, path in images.items() if image_id in masks or not masks}
        return [
            Sample(image_id, images[image_id], (masks.get(image_id) or mask_folder / f"{image_id}_mask.png",))
            for image_id in seeded_split(labelled)[split]
        ]


def shenzhen_mask_folder(root: Path) -> Path:
    """``mask/`` or ``masks/``, whichever the third-party release unpacked to (``masks/`` when neither)."""
    return next((root / name for name in SHENZHEN_MASK_FOLDERS if (root / name).is_dir()), root / "masks")


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(MontgomeryLung())
    register(ShenzhenLung())
