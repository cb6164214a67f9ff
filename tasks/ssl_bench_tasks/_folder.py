"""The folder task: ``images/`` and ``masks/`` with matching stems, described by a :class:`FolderSpec`.

:mod:`ssl_bench_tasks.folder` documents how users configure one; dataset modules (Kvasir-SEG) declare theirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_bench.api import DataError, read_image
from ssl_bench_tasks._files import image_files, seeded_split, split_counts
from ssl_bench_tasks._landmarks import LUNG_LANDMARKS, lung_landmarks
from ssl_bench_tasks._prepared import PreparedTask, Sample, XRayTask

_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")


def read_user_mask(path: Path, threshold: int) -> np.ndarray:
    """A mask as people store them, as ``bool (H, W)``: grey or colour, {0, 255} or {0, 1}.

    A pixel's value is its largest channel, so that a mask drawn red (255, 0, 0) is not lost to its grey
    (76). The mask's own maximum tells the scale: a mask whose maximum is 1 is {0, 1} and kept where 1; any
    other is kept where ``>= threshold``, so that JPEG noise around 0 and 255 stays on its side.
    """
    values = read_image(path).max(axis=2)
    return values >= (1 if values.max() == 1 else threshold)


@dataclass(frozen=True)
class FolderSpec:
    """A folder task: ``folders`` are tried in order under ``--data-root``, each with ``images/`` and ``masks/``."""

    name: str
    folders: tuple[str, ...]
    modality: str
    channels: int
    target: str = "foreground"
    mask_suffix: str = ""
    dataset: str = ""
    description: str = ""
    url: str = ""
    licence: str = ""
    citation: str = ""
    #: The official number of images, for the expected counts of the seeded split; None where not fixed.
    expected_total: int | None = None
    #: Whether the masks are both lungs, so that the task carries lung apices and costophrenic angles as landmarks.
    lung_landmarks: bool = False

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.fullmatch(self.name):
            raise DataError(f"folder task name {self.name!r} must be lower-case letters, digits and hyphens")
        wrong_type = [field.name for field in dataclasses.fields(self) if not self._has_its_type(field)]
        if wrong_type:
            raise DataError(f"folder task {self.name!r}: {', '.join(wrong_type)} must be text")
        if type(self.lung_landmarks) is not bool:
            raise DataError(f"folder task {self.name!r}: lung_landmarks must be true or false")
        if type(self.channels) is not int or self.channels not in (1, 3):
            raise DataError(f"folder task {self.name!r}: channels must be 1 or 3, got {self.channels!r}")
        if not self.folders or not all(isinstance(folder, str) and folder for folder in self.folders):
            raise DataError(f"folder task {self.name!r}: folder must be a non-empty path")

    def _has_its_type(self, field: dataclasses.Field) -> bool:
        """Whether a text field holds text (TOML tables can hold anything); other fields are checked apart."""
        return field.type != "str" or isinstance(getattr(self, field.name), str)

    def fingerprint(self) -> str:
        """A short hash of the fields that shape the task's data."""
        shaping = [self.folders, self.modality, self.channels, self.mask_suffix]
        return hashlib.sha256(json.dumps(shaping).encode()).hexdigest()[:10]


class FolderTask(PreparedTask):
    """A segmentation task read from ``images/`` and ``masks/``; its metadata come from a :class:`FolderSpec`.

    Modality ``cxr`` gets LD's X-ray protocol (:class:`XRayTask`); any other the fundus defaults.
    """

    root_markers = ("images", "masks")

    def __init__(self, spec: FolderSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.dataset = spec.dataset or spec.name
        self.root_candidates = spec.folders
        self.modality = spec.modality
        self.channels = spec.channels
        self.target = spec.target
        self.description = spec.description or f"{spec.target} in {spec.folders[0]}/images and masks (folder task)"
        self.url = spec.url or f"<data-root>/{spec.folders[0]} with images/ and masks/"
        self.licence = spec.licence
        self.citation = spec.citation
        if spec.modality == XRayTask.modality:
            self.flips = XRayTask.flips
            self.rotation_degrees = XRayTask.rotation_degrees
            self.label_fractions = XRayTask.label_fractions
        self.expected_counts = None if spec.expected_total is None else split_counts(spec.expected_total)
        if spec.lung_landmarks:
            self.landmarks = LUNG_LANDMARKS
        # 2: masks are read by read_user_mask (largest channel, {0, 1} or {0, 255}), no longer as grey.
        self.version = f"2-{spec.fingerprint()}"

    def samples(self, root: Path, split: str) -> list[Sample]:
        images = image_files(root / "images")
        masks = image_files(root / "masks", self.spec.mask_suffix)
        return [
            Sample(image_id, images[image_id], (masks.get(image_id) or self._expected_mask(root, image_id),))
            for image_id in seeded_split(images)[split]
        ]

    def _expected_mask(self, root: Path, image_id: str) -> Path:
        """The name that messages give a missing mask."""
        return root / "masks" / f"{image_id}{self.spec.mask_suffix}.png"

    def read_label_file(self, path: Path) -> np.ndarray:
        return read_user_mask(path, self.preparation.label_threshold)

    def mask_landmarks(self, masks: np.ndarray) -> torch.Tensor | None:
        return lung_landmarks(masks) if self.spec.lung_landmarks else None
