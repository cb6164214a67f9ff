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

from ssl_bench.api import DataError
from ssl_bench.api.data import read_mask
from ssl_bench_tasks._files import (
    grouped_split,
    image_files,
    read_id_table,
    read_split_file,
    seeded_split,
    split_counts,
)
from ssl_bench_tasks._landmarks import LUNG_LANDMARKS, lung_landmarks
from ssl_bench_tasks._prepared import PreparedTask, Sample, XRayTask

_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")


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
    #: The label values that are foreground in masks that are label maps ({0, 1, 2}); None: masks are binary or soft.
    foreground: tuple[int, ...] | None = None
    #: A regular expression searched in each image's id (its file name without the extension): its first group (or
    #: the whole match) names the image's group, e.g. the patient, and no group spans train and test.
    group: str | None = None
    #: A CSV file in the task's folder with columns ``id`` and ``group`` for every image: the groups, where the
    #: file names do not hold them.
    group_file: str | None = None
    #: ``images/<group>/<name>`` and ``masks/<group>/<name>``: one sub-folder per group (a patient's folder); the
    #: image's id is ``<group>/<name>``.
    group_by_folder: bool = False
    #: A CSV file in the task's folder with columns ``id`` and ``split`` (``train`` or ``test``) for every image:
    #: the split, instead of the seeded one.
    split_file: str | None = None

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
        if self.foreground is not None:
            # A tuple, so that the frozen spec stays hashable whatever sequence TOML gave.
            object.__setattr__(self, "foreground", self._labels(self.foreground))
        if self.group is not None:
            self._group_pattern()
        for key in ("group_file", "split_file"):
            if getattr(self, key) is not None and not (isinstance(getattr(self, key), str) and getattr(self, key)):
                raise DataError(
                    f'folder task {self.name!r}: {key} must name a CSV in its folder, e.g. "{key[:-5]}s.csv"'
                )
        if type(self.group_by_folder) is not bool:
            raise DataError(f"folder task {self.name!r}: group_by_folder must be true or false")
        given = [key for key in ("group", "group_file", "split_file") if getattr(self, key) is not None]
        given += ["group_by_folder"] if self.group_by_folder else []
        if len(given) > 1:
            raise DataError(
                f"folder task {self.name!r}: give one of group, group_file, group_by_folder and split_file, not {given}"
            )

    def _group_pattern(self) -> re.Pattern:
        try:
            return re.compile(self.group)
        except (re.error, TypeError) as error:
            raise DataError(
                f"folder task {self.name!r}: group must be a regular expression, e.g. group = '^(patient\\d+)_'; "
                f"'{self.group}' is not one ({error})"
            ) from error

    def group_of(self, image_id: str) -> str:
        """The group of ``image_id`` under :attr:`group`; an id the expression does not find is an error."""
        pattern = self._group_pattern()
        match = pattern.search(image_id)
        if match is None:
            raise DataError(
                f"folder task {self.name!r}: group '{self.group}' finds nothing in the image name {image_id!r}; "
                "write an expression that every name matches"
            )
        return match.group(1) if pattern.groups else match.group(0)

    def groups(self, ids: list[str]) -> dict[str, str]:
        """Image id -> its group under :attr:`group`, for a split: at least two groups."""
        groups = {image_id: self.group_of(image_id) for image_id in ids}
        if len(set(groups.values())) < 2:
            raise DataError(
                f"folder task {self.name!r}: group '{self.group}' puts all {len(ids)} images in one group, "
                f"{next(iter(groups.values()))!r}: a split needs two; capture what differs between patients"
            )
        return groups

    def _labels(self, values: object) -> tuple[int, ...]:
        labels = tuple(values) if isinstance(values, (list, tuple)) else ()
        if not labels or not all(type(label) is int and label >= 0 for label in labels):
            raise DataError(
                f"folder task {self.name!r}: foreground must be a list of label values >= 0, e.g. foreground = [1, 2], "
                f"got {values!r}"
            )
        return tuple(sorted(set(labels)))

    def _has_its_type(self, field: dataclasses.Field) -> bool:
        """Whether a text field holds text (TOML tables can hold anything); other fields are checked apart."""
        return field.type != "str" or isinstance(getattr(self, field.name), str)

    def fingerprint(self) -> str:
        """A short hash of the fields that shape the task's data."""
        shaping: list[object] = [self.folders, self.modality, self.channels, self.mask_suffix]
        # Each only when set, so that other tasks keep their versions.
        shaping += [value for value in (self.foreground, self.group, self.split_file) if value is not None]
        shaping += [["group_file", self.group_file]] if self.group_file is not None else []
        shaping += [["group_by_folder"]] if self.group_by_folder else []
        return hashlib.sha256(json.dumps(shaping).encode()).hexdigest()[:10]


class FolderTask(PreparedTask):
    """A segmentation task read from ``images/`` and ``masks/``; its metadata come from a :class:`FolderSpec`.

    Modality ``cxr`` gets LD's X-ray protocol (:class:`XRayTask`); any other the fundus defaults.
    """

    root_markers = ("images", "masks")

    def __init__(self, spec: FolderSpec) -> None:
        self.spec = spec
        self._file_groups: dict[str, str] = {}
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
        # 2: masks read by their largest channel, {0, 1} or {0, 255}; 3: by read_mask (any bit depth, {0, v},
        # label maps), so that masks cached empty by 2 are read again.
        self.version = f"3-{spec.fingerprint()}"

    def samples(self, root: Path, split: str) -> list[Sample]:
        images, masks = self._files(root / "images", ""), self._files(root / "masks", self.spec.mask_suffix)
        return [
            Sample(image_id, images[image_id], (masks.get(image_id) or self._expected_mask(root, image_id),))
            for image_id in self._split(root, list(images))[split]
        ]

    def _files(self, folder: Path, suffix: str) -> dict[str, Path]:
        """Id -> file: of ``folder``, or of each of its sub-folders (``<group>/<name>``) when grouped by folder."""
        if not self.spec.group_by_folder:
            return image_files(folder, suffix)
        groups = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
        return {
            f"{group.name}/{image_id}": path
            for group in groups
            for image_id, path in image_files(group, suffix).items()
        }

    def image_group(self, image_id: str) -> str:
        if self.spec.group is not None:
            return self.spec.group_of(image_id)
        if self.spec.group_by_folder:
            return image_id.split("/", 1)[0]
        return self._file_groups.get(image_id, image_id)  # read with the split (group_file); else the image alone

    def _split(self, root: Path, ids: list[str]) -> dict[str, tuple[str, ...]]:
        if self.spec.split_file is not None:
            return read_split_file(root / self.spec.split_file, ids)
        if self.spec.group is not None:
            return grouped_split(self.spec.groups(ids))
        if self.spec.group_file is not None:
            self._file_groups = read_id_table(root / self.spec.group_file, ids, "group", "group file")
            return grouped_split(self._file_groups)
        if self.spec.group_by_folder:
            return grouped_split({image_id: self.image_group(image_id) for image_id in ids})
        return seeded_split(ids)

    def _expected_mask(self, root: Path, image_id: str) -> Path:
        """The name that messages give a missing mask."""
        return root / "masks" / f"{image_id}{self.spec.mask_suffix}.png"

    def read_label_file(self, path: Path) -> np.ndarray:
        # The largest channel: a user's mask drawn green or blue is as much a mask as one drawn red.
        return read_mask(path, self.preparation.label_threshold, self.spec.foreground, channel="largest")

    def mask_landmarks(self, masks: np.ndarray) -> torch.Tensor | None:
        return lung_landmarks(masks) if self.spec.lung_landmarks else None
