"""The contract of a downstream task and of an unlabelled pretraining pool."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from ssl_bench.errors import PluginError, SslBenchError
from ssl_bench.stopping import stop_requested


@dataclass(frozen=True)
class Availability:
    """Whether a task's data was found; if not, why not and where to get it."""

    ok: bool
    reason: str = ""

    @classmethod
    def found(cls) -> Availability:
        return cls(True)

    @classmethod
    def missing(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class SegmentationSplit:
    """Images ``uint8 (N, C, H, W)`` with binary masks ``bool (N, H, W)``, named by ``ids``.

    ``landmarks``, for a task that declares :attr:`Task.landmarks` (L names), holds each image's points as
    ``float32 (N, L, 2)`` in pixel ``(row, col)`` of the split's images (pixel centres at integers), NaN where
    an image lacks that point; None for a task without landmarks.
    """

    images: torch.Tensor
    masks: torch.Tensor
    ids: tuple[str, ...]
    landmarks: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.masks.dtype != torch.bool or self.masks.shape != (n, *self.images.shape[2:]):
            raise ValueError(
                f"masks must be bool {(n, *self.images.shape[2:])}, got {self.masks.dtype} {tuple(self.masks.shape)}"
            )
        if self.images.shape[0] != n:
            raise ValueError(f"{self.images.shape[0]} images but {n} ids")
        landmarks = self.landmarks
        if landmarks is not None and (
            landmarks.dtype != torch.float32 or landmarks.ndim != 3 or landmarks.shape[::2] != (n, 2)
        ):
            raise ValueError(f"landmarks must be float32 ({n}, L, 2), got {landmarks.dtype} {tuple(landmarks.shape)}")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: slice | torch.Tensor) -> SegmentationSplit:
        """The images at ``rows`` (a slice, or a tensor of row indices), in that order."""
        landmarks = None if self.landmarks is None else self.landmarks[rows]
        return SegmentationSplit(self.images[rows], self.masks[rows], _ids_at(self.ids, rows), landmarks)

    def digest(self, hasher) -> None:
        # Landmarks join the digest only where present, so that tasks without them keep their fingerprints.
        extra = () if self.landmarks is None else (self.landmarks,)
        _digest_split(hasher, self.ids, self.images, self.masks, *extra)


@dataclass(frozen=True)
class SegmentationData:
    """A task's data. Validation and labelled images come from ``train`` (see :attr:`Task.ordered_split`)."""

    train: SegmentationSplit
    test: SegmentationSplit

    def fingerprint(self) -> str:
        """A hash of the data as read (pixels, masks, ids and order of every split): part of every job's id."""
        return _fingerprint(self.train, self.test)


@dataclass(frozen=True)
class ClassificationSplit:
    """Images ``uint8 (N, C, H, W)`` with labels ``int64 (N, L)``: one class index per image (L = 1), or
    L binary labels per image for multi-label tasks."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[0] != n:
            raise ValueError(f"images must be uint8 ({n}, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 2 or self.labels.shape[0] != n:
            raise ValueError(f"labels must be int64 ({n}, L), got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: slice | torch.Tensor) -> ClassificationSplit:
        """The images at ``rows`` (a slice, or a tensor of row indices), in that order."""
        return ClassificationSplit(self.images[rows], self.labels[rows], _ids_at(self.ids, rows))

    def digest(self, hasher) -> None:
        _digest_split(hasher, self.ids, self.images, self.labels)


@dataclass(frozen=True)
class ClassificationData:
    """A classification task's official splits; model selection uses ``val``, never ``test``."""

    train: ClassificationSplit
    val: ClassificationSplit
    test: ClassificationSplit

    def fingerprint(self) -> str:
        """A hash of the data as read (pixels, labels, ids and order of every split): part of every job's id."""
        return _fingerprint(self.train, self.val, self.test)


def _ids_at(ids: tuple[str, ...], rows: slice | torch.Tensor) -> tuple[str, ...]:
    return ids[rows] if isinstance(rows, slice) else tuple(ids[row] for row in rows.tolist())


def _digest_split(hasher, ids: tuple[str, ...], *tensors: torch.Tensor) -> None:
    hasher.update("\n".join(ids).encode())
    for tensor in tensors:
        hasher.update(str((tensor.dtype, tuple(tensor.shape))).encode())
        hasher.update(tensor.contiguous().numpy().tobytes())


def _fingerprint(*splits) -> str:
    hasher = hashlib.blake2b(digest_size=16)
    for split in splits:
        split.digest(hasher)
    return hasher.hexdigest()


class Task(ABC):
    """A downstream task. Segmentation tasks (the default ``kind``) are scored by per-image Dice at 0.5;
    classification tasks (``kind = "classification"``, loading :class:`ClassificationData`) by AUC."""

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[str] = "segmentation"
    #: Classification only: the number of classes (multi-class) or of binary labels (multi-label).
    classes: ClassVar[int] = 2
    multi_label: ClassVar[bool] = False
    #: Pretraining pools and tasks meet by modality (``fundus``, ``cxr``, ``synthetic-fundus``...).
    modality: ClassVar[str]
    channels: ClassVar[int]
    #: What is segmented or classified, in words (``"retinal vessels"``, ``"lungs"``): shown by ``list tasks``.
    target: ClassVar[str]
    url: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    #: The downstream augmentation, per the released LD code: random flips (fundus: yes; X-ray: no, its flips
    #: are commented out there) and a rotation ~ U(-deg, deg) (180 fundus, 30 X-ray).
    flips: ClassVar[bool] = True
    rotation_degrees: ClassVar[float] = 180.0
    #: Whether the training list is a released ordered list whose order the task reproduces (LD's splits): its
    #: labelled subset is then the list's prefix, and validation the first 20% of that prefix, as the authors took
    #: them. Otherwise (the default: a file's order is not a random order) both are drawn by a seeded permutation.
    ordered_split: ClassVar[bool] = False
    #: Label fractions run at the ``paper`` scale (budgets other than ``demo``) unless the run names its own (LD: X-ray
    #: tasks at 0.2 to 1.0); the ``demo`` scale runs 1.0.
    label_fractions: ClassVar[tuple[float, ...]] = (1.0,)
    #: Downstream batch size at the ``paper`` scale (LD: 2; 8 for SIIM pneumothorax).
    paper_batch_size: ClassVar[int] = 2
    #: The (train, test) image counts of the split this task uses, for ``ssl-bench data check`` to compare what
    #: it found with; for a split that is not the owners' (LD's, a seeded one) these are that split's counts.
    #: None where the counts are not fixed (a user's folder).
    expected_counts: ClassVar[tuple[int, int] | None] = None
    #: Segmentation only: the names of the landmark points every image's data carries
    #: (:attr:`SegmentationSplit.landmarks`, in this order); empty for a task without landmarks.
    landmarks: ClassVar[tuple[str, ...]] = ()
    #: Segmentation only: the registered task whose training masks are this task's shape prior (masks of the same
    #: structure from elsewhere, for the ``shape-guided`` protocol), or None.
    shape_source: ClassVar[str | None] = None
    #: Whether runs that name no tasks (``--all``) include this task; False for a task kept only as another's
    #: shape source (it still runs when named).
    default_run: ClassVar[bool] = True
    #: Bump on any change to how the data is read. Jobs are also keyed by the data's content, so changed files
    #: re-run their jobs without a bump.
    version: ClassVar[str] = "1"

    def availability(self, data_root: Path | None) -> Availability:
        """Whether the task's data is under ``data_root`` (``missing`` with where to get it if not); built-in data
        is always available. A dataset that is there but incomplete is not "missing": :meth:`load` raises
        ``DataError`` naming the file."""
        return Availability.found()

    def image_group(self, image_id: str) -> str:
        """The group of image ``image_id`` (its patient, volume or eye): a task's split keeps groups whole, and a
        pretraining pool leaves out every image of a group that is in any task's test split. By default each image
        is its own group."""
        return image_id

    @abstractmethod
    def load(self, data_root: Path | None) -> SegmentationData | ClassificationData:
        """The task's images and masks (or labels), at the task's prepared size: the size the task is distributed
        at, or LD's 512 x 512 for its tasks; protocols resize to their own input size. Raise ``DataError`` (which
        file, what was expected, how to fix) for data that cannot be right."""


def load_task_data(task: Task, data_root: Path | None) -> SegmentationData | ClassificationData:
    """``task.load(data_root)``. Any error but ssl-bench's own is a bug in the task's plugin: it becomes a
    :class:`PluginError` naming the task, so that callers leave that task out and go on with the others."""
    try:
        return task.load(data_root)
    except SslBenchError:
        raise
    except Exception as error:
        if stop_requested():
            raise KeyboardInterrupt from error  # a stop that landed in the plugin's code: not its fault
        raise PluginError(
            f"task {task.name} failed to load its data ({type(error).__name__}: {error}): a bug in its plugin, "
            "report it to the plugin's authors"
        ) from error


class Pool(ABC):
    """An unlabelled pretraining pool of one modality."""

    name: ClassVar[str]
    description: ClassVar[str]
    modality: ClassVar[str]
    channels: ClassVar[int]
    version: ClassVar[str] = "1"

    @abstractmethod
    def images(self, data_root: Path | None) -> torch.Tensor:
        """The pool's images, ``uint8 (N, C, H, W)`` at one size."""
