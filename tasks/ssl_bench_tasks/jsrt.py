"""JSRT chest X-rays with SCR masks: lungs, heart and clavicles, split and prepared as the LD paper did.

JSRT ships ``All247images/JPCLN001.IMG``...: raw 2048x2048 pixels, 12-bit values stored as 16-bit big-endian
words, no header; a higher raw value is darker. SCR ships its masks as 1024x1024 GIFs under
``scratch/fold1/masks/{left lung,right lung,heart,left clavicle,right clavicle}/`` (and ``fold2``); left and
right are merged. LD trains on SCR fold1 (124 images) and tests on fold2 (123), in the order of its
``ld-splits/*_SCR.csv`` lists, which is SCR's own fold order (not sorted), the same for all three targets.
LD inverts the raw values to display values (4095 - raw), min-max scales them to 8 bits and resizes to 512.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from ssl_bench.api import DataError, hookimpl
from ssl_bench_tasks._files import image_files
from ssl_bench_tasks._prepared import LungLandmarks, Preparation, Sample, XRayTask

JSRT_URL = "http://db.jsrt.or.jp/eng.php"
SCR_URL = "https://www.isi.uu.nl/Research/Databases/SCR/"
JSRT_SIDE = 2048
JSRT_MAX_VALUE = 4095
_JSRT_BYTES = JSRT_SIDE * JSRT_SIDE * 2


def decode_jsrt(raw: bytes, source: Path) -> np.ndarray:
    """JSRT ``.IMG`` bytes -> raw values ``uint16 (2048, 2048)``; ``source`` names the file in errors."""
    if len(raw) != _JSRT_BYTES:
        raise DataError(
            f"{source} has {len(raw)} bytes, not the {_JSRT_BYTES} of a JSRT image (2048x2048, 16-bit): "
            f"truncated or not a JSRT .IMG file"
        )
    values = np.frombuffer(raw, dtype=">u2").reshape(JSRT_SIDE, JSRT_SIDE).astype(np.uint16)
    # Little-endian or non-JSRT data shows up as values beyond 12 bits.
    if values.max() > JSRT_MAX_VALUE:
        raise DataError(f"{source} has values above {JSRT_MAX_VALUE}: not a 12-bit big-endian JSRT image")
    return values


def read_jsrt(path: Path) -> np.ndarray:
    """The raw values of the JSRT image at ``path``; :class:`DataError` naming it when unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise DataError(f"{path} is not readable: {error}") from error
    return decode_jsrt(raw, path)


#: LD's split: SCR fold1 trains, fold2 tests, each in the order of LD's lists (SCR's fold order).
SCR_FOLDS = {"train": "fold1", "test": "fold2"}
_LD_TRAIN_IDS = """
JPCLN001 JPCLN003 JPCLN005 JPCLN007 JPCLN009 JPCLN011 JPCLN013 JPCLN015 JPCLN017 JPCLN019 JPCLN021
JPCLN023 JPCLN025 JPCLN027 JPCLN029 JPCLN031 JPCLN033 JPCLN035 JPCLN039 JPCLN041 JPCLN043 JPCLN045
JPCLN047 JPCLN049 JPCLN051 JPCLN053 JPCLN055 JPCLN057 JPCLN059 JPCLN061 JPCLN063 JPCLN065 JPCLN067
JPCLN069 JPCLN071 JPCLN073 JPCLN077 JPCLN079 JPCLN081 JPCLN083 JPCLN085 JPCLN087 JPCLN089 JPCLN091
JPCLN093 JPCLN095 JPCLN097 JPCLN099 JPCLN101 JPCLN103 JPCLN105 JPCLN107 JPCLN109 JPCLN113 JPCLN115
JPCLN117 JPCLN119 JPCLN121 JPCLN123 JPCLN125 JPCLN127 JPCLN129 JPCLN131 JPCLN133 JPCLN135 JPCLN137
JPCLN139 JPCLN141 JPCLN143 JPCLN145 JPCLN037 JPCLN075 JPCLN111 JPCLN147 JPCNN029 JPCLN149 JPCLN151
JPCLN153 JPCNN001 JPCNN003 JPCNN005 JPCNN007 JPCNN009 JPCNN011 JPCNN013 JPCNN015 JPCNN017 JPCNN019
JPCNN021 JPCNN023 JPCNN025 JPCNN027 JPCNN031 JPCNN033 JPCNN035 JPCNN037 JPCNN039 JPCNN041 JPCNN043
JPCNN045 JPCNN047 JPCNN049 JPCNN051 JPCNN053 JPCNN055 JPCNN057 JPCNN059 JPCNN061 JPCNN063 JPCNN065
JPCNN067 JPCNN069 JPCNN071 JPCNN073 JPCNN075 JPCNN077 JPCNN079 JPCNN081 JPCNN083 JPCNN085 JPCNN087
JPCNN089 JPCNN091 JPCNN093
"""
_LD_TEST_IDS = """
JPCLN002 JPCLN004 JPCLN006 JPCLN008 JPCLN010 JPCLN012 JPCLN014 JPCLN016 JPCLN018 JPCLN020 JPCLN022
JPCLN024 JPCLN026 JPCLN028 JPCLN030 JPCLN032 JPCLN034 JPCLN036 JPCLN040 JPCLN042 JPCLN044 JPCLN046
JPCLN048 JPCLN050 JPCLN052 JPCLN054 JPCLN056 JPCLN058 JPCLN060 JPCLN062 JPCLN064 JPCLN066 JPCLN068
JPCLN070 JPCLN072 JPCLN074 JPCLN078 JPCLN080 JPCLN082 JPCLN084 JPCLN086 JPCLN088 JPCLN090 JPCLN092
JPCLN094 JPCLN096 JPCLN098 JPCLN100 JPCLN102 JPCLN104 JPCLN106 JPCLN108 JPCLN110 JPCLN114 JPCLN116
JPCLN118 JPCLN120 JPCLN122 JPCLN124 JPCLN126 JPCLN128 JPCLN130 JPCLN132 JPCLN134 JPCLN136 JPCLN138
JPCLN140 JPCLN142 JPCLN144 JPCLN146 JPCLN038 JPCLN076 JPCLN112 JPCLN148 JPCNN030 JPCLN150 JPCLN152
JPCLN154 JPCNN002 JPCNN004 JPCNN006 JPCNN008 JPCNN010 JPCNN012 JPCNN014 JPCNN016 JPCNN018 JPCNN020
JPCNN022 JPCNN024 JPCNN026 JPCNN028 JPCNN032 JPCNN034 JPCNN036 JPCNN038 JPCNN040 JPCNN042 JPCNN044
JPCNN046 JPCNN048 JPCNN050 JPCNN052 JPCNN054 JPCNN056 JPCNN058 JPCNN060 JPCNN062 JPCNN064 JPCNN066
JPCNN068 JPCNN070 JPCNN072 JPCNN074 JPCNN076 JPCNN078 JPCNN080 JPCNN082 JPCNN084 JPCNN086 JPCNN088
JPCNN090 JPCNN092
"""
LD_IDS = {"train": tuple(_LD_TRAIN_IDS.split()), "test": tuple(_LD_TEST_IDS.split())}


class _ScrTask(XRayTask):
    """A JSRT image with the union of its SCR masks of ``structures``; only images present are listed."""

    structures: ClassVar[tuple[str, ...]]
    url = f"{JSRT_URL} (JSRT images), {SCR_URL} (SCR masks)"
    licence = "JSRT: free for research and education (registration); SCR: research use; cite both"
    citation = (
        "J. Shiraishi, S. Katsuragawa, J. Ikezoe, T. Matsumoto, T. Kobayashi, K. Komatsu, M. Matsui, H. Fujita, "
        "Y. Kodera, K. Doi: Development of a digital image database for chest radiographs with and without a lung "
        "nodule. American Journal of Roentgenology 174(1):71-74, 2000; B. van Ginneken, M. B. Stegmann, M. Loog: "
        "Segmentation of anatomical structures in chest radiographs using supervised methods: a comparative study "
        "on a public database. Medical Image Analysis 10(1):19-40, 2006"
    )
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (len(LD_IDS["train"]), len(LD_IDS["test"]))
    version = "1"
    dataset = "JSRT images with SCR masks"
    root_candidates = ("JSRT", "")
    root_markers = ("All247images", "scratch")
    # SCR masks are 1024x1024, half the image's size: each is resized to 512 on its own.
    preparation = Preparation(invert=True, min_max=True, label_size_may_differ=True)

    def samples(self, root: Path, split: str) -> list[Sample]:
        images = image_files(root / "All247images", extensions=frozenset({".img"}))
        masks = root / "scratch" / SCR_FOLDS[split] / "masks"
        return [
            Sample(image_id, images[image_id], tuple(masks / part / f"{image_id}.gif" for part in self.structures))
            for image_id in LD_IDS[split]
            if image_id in images
        ]

    def read_image_file(self, path: Path) -> np.ndarray:
        return read_jsrt(path)[..., None]


class JsrtLung(LungLandmarks, _ScrTask):
    name = "jsrt-lung"
    description = "JSRT chest X-rays, SCR lungs (left + right): 124 train (fold1) / 123 test (fold2), 512x512"
    target = "lungs (left + right)"
    structures = ("left lung", "right lung")


class JsrtHeart(_ScrTask):
    name = "jsrt-heart"
    description = "JSRT chest X-rays, SCR heart: 124 train (fold1) / 123 test (fold2), 512x512"
    target = "heart"
    structures = ("heart",)


class JsrtClavicle(_ScrTask):
    name = "jsrt-clavicle"
    description = "JSRT chest X-rays, SCR clavicles (left + right): 124 train (fold1) / 123 test (fold2), 512x512"
    target = "clavicles (left + right)"
    structures = ("left clavicle", "right clavicle")


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    for task in (JsrtLung, JsrtHeart, JsrtClavicle):
        register(task())
