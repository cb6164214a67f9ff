"""Built-in synthetic phantoms: fundus vessels and chest X-ray lungs, with their unlabelled pools, and angiogram
vessels, the fundus vessels' shape prior.

They need no download, so that a fresh install can run the whole benchmark. Labelled images and
pool images come from different seeds: no image is both pretrained on and tested on.

Landmarks: the fundus task carries the generator's own (disc and fovea centres, each temporal arcade's first
branching: ``FUNDUS_LANDMARKS`` in :mod:`ssl_bench.data.phantoms`), exactly where it drew them; the lung task
carries the lung apices and costophrenic angles derived from its lung masks (:mod:`ssl_bench_tasks._landmarks`).

Shapes: ``synthetic-vessel``'s shape prior (``shape-guided``) is the training masks of ``synthetic-angiogram``, a
different vessel family (trees entering from the border, denser branching, no field of view), so that the prior
is never a mask of the target's images. Runs leave that task out unless it is named.
"""

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ssl_bench.api import Pool, SegmentationData, SegmentationSplit, Task, hookimpl
from ssl_bench.api.data import FUNDUS_LANDMARKS, PhantomSet, make_angiogram, make_cxr, make_fundus
from ssl_bench_tasks._landmarks import LUNG_LANDMARKS, lung_landmarks

IMAGE_SIZE = 128
TRAIN_IMAGES = 24
TEST_IMAGES = 8
POOL_IMAGES = 400
LABELLED_SEED = 2021
POOL_SEED = 1994


def _split(
    phantoms: PhantomSet, target: str, start: int, prefix: str, landmarks: torch.Tensor | None
) -> SegmentationSplit:
    n = len(phantoms.images)
    return SegmentationSplit(
        torch.from_numpy(phantoms.images),
        torch.from_numpy(phantoms.masks[target]),
        tuple(f"{prefix}{start + i:03d}" for i in range(n)),
        landmarks,
    )


class _SyntheticTask(Task):
    make: ClassVar[Callable[..., PhantomSet]]
    mask: ClassVar[str]
    url = "built in (ssl_bench.data.phantoms)"
    licence = "MIT (generated)"

    def load(self, data_root: Path | None) -> SegmentationData:
        train = type(self).make(TRAIN_IMAGES, IMAGE_SIZE, LABELLED_SEED)
        test = type(self).make(TEST_IMAGES, IMAGE_SIZE, LABELLED_SEED, start=TRAIN_IMAGES)
        return SegmentationData(
            train=_split(train, self.mask, 0, "train", self.landmark_points(train)),
            test=_split(test, self.mask, TRAIN_IMAGES, "test", self.landmark_points(test)),
        )

    def landmark_points(self, phantoms: PhantomSet) -> torch.Tensor | None:
        """The :attr:`landmarks` of each phantom, ``float32 (N, L, 2)`` in pixel ``(row, col)``; None without any."""
        if not self.landmarks:
            return None
        return torch.from_numpy(np.stack([phantoms.landmarks[name] for name in self.landmarks], axis=1))


class SyntheticVessel(_SyntheticTask):
    name = "synthetic-vessel"
    description = "Vessel segmentation on synthetic RGB fundus phantoms (built in)."
    modality = "synthetic-fundus"
    channels = 3
    target = "retinal vessels"
    rotation_degrees = 180.0
    landmarks = FUNDUS_LANDMARKS
    shape_source = "synthetic-angiogram"
    make = staticmethod(make_fundus)
    mask = "vessel"


class SyntheticAngiogram(_SyntheticTask):
    name = "synthetic-angiogram"
    description = "Vessel segmentation on synthetic grey OCTA-like angiograms (built in; synthetic-vessel's shapes)."
    modality = "synthetic-angiogram"
    channels = 1
    target = "vessels"
    default_run = False  # kept as synthetic-vessel's shape source: --all leaves it out
    make = staticmethod(make_angiogram)
    mask = "vessel"


class SyntheticLung(_SyntheticTask):
    name = "synthetic-lung"
    description = "Lung segmentation on synthetic grey chest X-ray phantoms (built in)."
    modality = "synthetic-cxr"
    channels = 1
    target = "lungs"
    flips = False  # LD's X-ray protocol, like the real X-ray tasks
    rotation_degrees = 30.0
    landmarks = LUNG_LANDMARKS
    make = staticmethod(make_cxr)
    mask = "lung"

    def landmark_points(self, phantoms: PhantomSet) -> torch.Tensor:
        return lung_landmarks(phantoms.masks[self.mask])


class _SyntheticPool(Pool):
    make: ClassVar[Callable[..., PhantomSet]]

    def images(self, data_root: Path | None) -> torch.Tensor:
        return torch.from_numpy(type(self).make(POOL_IMAGES, IMAGE_SIZE, POOL_SEED).images)


class SyntheticFundusPool(_SyntheticPool):
    name = "synthetic-fundus"
    description = f"{POOL_IMAGES} unlabelled synthetic fundus phantoms."
    modality = "synthetic-fundus"
    channels = 3
    make = staticmethod(make_fundus)


class SyntheticCxrPool(_SyntheticPool):
    name = "synthetic-cxr"
    description = f"{POOL_IMAGES} unlabelled synthetic chest X-ray phantoms."
    modality = "synthetic-cxr"
    channels = 1
    make = staticmethod(make_cxr)


@hookimpl
def ssl_bench_register_tasks(register):
    register(SyntheticVessel())
    register(SyntheticLung())
    register(SyntheticAngiogram())


@hookimpl
def ssl_bench_register_pools(register):
    register(SyntheticFundusPool())
    register(SyntheticCxrPool())
