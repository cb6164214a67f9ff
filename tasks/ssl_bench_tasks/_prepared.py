"""The shared base of the task plugins that read a dataset from its owners' files and prepare it as LD did.

A dataset module subclasses :class:`PreparedTask` (or :class:`XRayTask`, LD's chest X-ray protocol) and
declares its layout; the base does the rest (finding the dataset, availability with reasons and the download
URL, checking that it is complete, reading, preprocessing, caching)::

    class StareVessel(PreparedTask):
        name, description, modality, channels, target, url, licence, citation = ...  # Task metadata
        expected_counts = (10, 10)
        dataset = "STARE"                                 # how messages name the dataset
        root_candidates = ("STARE", "")                   # folders under --data-root, tried in order
        root_markers = ("stare-images", "labels-ah")      # paths that must exist in the dataset's folder
        preparation = FUNDUS                              # or Preparation(size=512, invert=True, min_max=True)

        def samples(self, root, split):                   # split "train" or "test", in the split's order
            return [Sample(id, root / ..., (root / ...,)) for id in ...]

Reading and preparing one sample:

1. :meth:`PreparedTask.read_image_file` reads the image: ``uint8 (H, W, channels)`` by default, from any
   format PIL reads, gzipped (``.gz``) or not. Override it for other formats (raw JSRT ``.IMG``); it may
   return any numeric dtype when ``preparation.min_max`` is set (12-bit values keep their precision).
2. Intensity: ``invert`` and/or ``min_max`` (per image, to 0..255), when the preparation asks for them.
3. The labels: each of ``sample.labels`` is read by :meth:`PreparedTask.read_label_file` (the first
   channel ``>= preparation.label_threshold``; a soft map of annotators' votes is thresholded the same way)
   and they are merged by OR (left + right lungs). With ``optional_labels`` an absent label file adds
   nothing, so an image without any has an empty mask.
4. ``fundus_crop``: LD's fundus ROI box from the image (any channel > 20, largest 8-connected region,
   +16 px), applied to the image and its mask alike.
5. Resize to ``size`` x ``size``: the image bilinearly, the mask bilinearly then re-binarised where it
   exceeds ``preparation.resize_threshold`` * 255 (LD: 0.3; 0.01 for HRF).
6. A task with :attr:`~ssl_bench.api.Task.landmarks` derives their points from each split's prepared masks
   (:meth:`PreparedTask.mask_landmarks`; :class:`LungLandmarks` for lung masks, :class:`DiscLandmarks` for
   optic disc masks).

Data that cannot be right is refused, with :class:`DataError`, before anything trains: a dataset folder that
is present but incomplete (a file or folder missing, a split without images) is an error naming what is
missing, while an absent dataset folder is merely not available; and a split whose masks are all empty is an
error naming its label files.

Prepared arrays are cached on disk, keyed by the source files' names, sizes and mtimes, the task's version
and the preparation: a second load starts at once, and any change prepares the data again.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import torch

from ssl_bench.api import Availability, DataError, SegmentationData, SegmentationSplit, Task
from ssl_bench.api.data import crop, fundus_roi_box, prepared_arrays, read_image, read_mask, resize_image, resize_mask
from ssl_bench_tasks._landmarks import DISC_LANDMARKS, LUNG_LANDMARKS, disc_landmarks, lung_landmarks

#: The splits of every task, in :class:`SegmentationData`'s order.
SPLITS = ("train", "test")

_Read = TypeVar("_Read")
#: How many files an error names before it only counts the others.
_NAMED_FILES = 3


@dataclass(frozen=True)
class Sample:
    """One image and the label files whose union is its mask (none: an empty mask)."""

    id: str
    image: Path
    labels: tuple[Path, ...]


@dataclass(frozen=True)
class Preparation:
    """How a task's images and labels are prepared; every field is part of the cache key.

    ``label_size_may_differ`` lets labels have another size than their image (SCR masks are half JSRT's
    size): each is then resized straight to ``size``. It cannot go with ``fundus_crop``, whose box is in the
    image's pixels.
    """

    #: Side of the prepared square images and masks.
    size: int = 512
    #: LD's fundus ROI crop, with its brightness threshold and margin in pixels.
    fundus_crop: bool = False
    roi_threshold: int = 20
    roi_margin: int = 16
    #: A label pixel is set where its first channel is >= this (soft maps: 128 keeps values > 127).
    label_threshold: int = 128
    #: A resized mask is kept where it exceeds this fraction of 255 (LD: 0.3; 0.01 for HRF).
    resize_threshold: float = 0.3
    #: Intensity steps, in this order: invert (alone: 255 - value), then min-max to 0..255 per image.
    invert: bool = False
    min_max: bool = False
    label_size_may_differ: bool = False

    def __post_init__(self) -> None:
        if self.fundus_crop and self.label_size_may_differ:
            raise ValueError("fundus_crop needs labels of the image's size: the box is in image pixels")


#: LD's fundus protocol: ROI crop (threshold 20, +16 px), 512x512, labels binarised at 128.
FUNDUS = Preparation(fundus_crop=True)


def ld_order(front: Sequence[str], members: Iterable[str]) -> tuple[str, ...]:
    """``front`` followed by the other ``members`` in sorted order: the shape of most LD training lists."""
    rest = sorted(set(members) - set(front))
    return (*front, *rest)


def find_file(folder: Path, *names: str, ignore_case: bool = False) -> Path:
    """The first of ``names`` present in ``folder`` (compared without case when asked).

    When none is present, ``folder / names[0]``: messages then name the file that was expected.
    """
    if ignore_case and folder.is_dir():
        present = {path.name.lower(): path for path in folder.iterdir()}
        found = (present.get(name.lower()) for name in names)
    else:
        found = (folder / name if (folder / name).is_file() else None for name in names)
    return next((path for path in found if path is not None), folder / names[0])


def read_maybe_gzipped(path: Path, read: Callable[[Path], _Read]) -> _Read:
    """``read(path)``; a ``.gz`` file is read from a decompressed temporary copy, and errors name the original."""
    if path.suffix.lower() != ".gz":
        return read(path)
    with tempfile.TemporaryDirectory(prefix="ssl-bench-") as folder:
        plain = Path(folder) / path.stem  # keeps the inner suffix (.ppm) that tells PIL the format
        try:
            plain.write_bytes(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path} is not a readable gzip file: {error}") from error
        try:
            return read(plain)
        except DataError as error:
            raise DataError(str(error).replace(str(plain), str(path))) from error


class PreparedTask(Task):
    """A task read from a dataset's files on disk; subclasses declare the layout (see the module's docstring)."""

    #: The dataset's name in messages ("DRIVE").
    dataset: ClassVar[str]
    #: Folders under ``--data-root`` that may hold the dataset, tried in order; "" is ``--data-root`` itself.
    root_candidates: ClassVar[tuple[str, ...]] = ("",)
    #: Paths (folders or files) that must exist in the dataset's folder for it to be recognised.
    root_markers: ClassVar[tuple[str, ...]]
    preparation: ClassVar[Preparation] = Preparation()
    #: Whether an absent label file means an empty mask (lesions that an image does not have).
    optional_labels: ClassVar[bool] = False

    @abstractmethod
    def samples(self, root: Path, split: str) -> list[Sample]:
        """The samples of ``split`` ("train" or "test") in the split's order; files need not exist."""

    def read_image_file(self, path: Path) -> np.ndarray:
        """The image at ``path`` as ``(H, W, channels)``; raises :class:`DataError` naming an unreadable file."""
        return read_maybe_gzipped(path, lambda plain: read_image(plain, channels=self.channels))

    def read_label_file(self, path: Path) -> np.ndarray:
        """The label at ``path`` as ``bool (H, W)``: its first channel ``>= preparation.label_threshold``."""
        return read_maybe_gzipped(path, lambda plain: read_mask(plain, self.preparation.label_threshold))

    def mask_landmarks(self, masks: np.ndarray) -> torch.Tensor | None:
        """The :attr:`landmarks` of each prepared mask ``bool (N, H, W)``, ``float32 (N, L, 2)``; None (the
        default) for a task without landmarks."""
        return None

    def dataset_folder(self, data_root: Path | None) -> Path | None:
        """Where the dataset is: the first of ``root_candidates`` that holds every one of ``root_markers``,
        else, of the named candidate folders that exist (an incomplete copy), the first with the most markers;
        None when the dataset is absent.

        The candidate "" (``data_root`` itself) always exists, so only its markers can show the dataset there.
        """
        if data_root is None:
            return None
        candidates = self._candidates(data_root)
        complete = (root for root in candidates if self._markers_in(root) == len(self.root_markers))
        present = [root for root in candidates if root != Path(data_root) and root.is_dir()]
        return next(complete, None) or max(present, key=self._markers_in, default=None)

    def missing_files_reason(self, root: Path, absent: list[Path]) -> str:
        """Why the dataset in ``root`` cannot be loaded when the ``absent`` files are missing."""
        return (
            f"{len(absent)} {self.dataset} file(s) missing, first {absent[0]}; "
            f"download {self.dataset} again from {self.url}"
        )

    def availability(self, data_root: Path | None) -> Availability:
        """Found when the dataset's folder is there, complete or not: an incomplete copy is not a dataset to
        skip but an error, which :meth:`load` raises naming what is missing."""
        if data_root is None:
            return Availability.missing(f"no data folder given: download {self.dataset} from {self.url}")
        if self.dataset_folder(data_root) is None:
            return Availability.missing(self._not_found_reason(data_root))
        return Availability.found()

    def load(self, data_root: Path | None) -> SegmentationData:
        root = self.dataset_folder(data_root)
        if root is None:
            raise DataError(self.availability(data_root).reason)
        samples = self._complete_samples(root)
        files = [path for sample in _flat(samples) for path in (sample.image, *sample.labels) if path.is_file()]
        parameters = asdict(self.preparation)
        arrays = prepared_arrays(self.name, files, root, self.version, parameters, lambda: self._prepare(samples))
        splits = {split: _split(arrays, split, samples, self.mask_landmarks) for split in SPLITS}
        for split in SPLITS:
            self._refuse_empty_masks(split, splits[split], samples[split])
        return SegmentationData(**splits)

    def _candidates(self, data_root: Path) -> list[Path]:
        return [Path(data_root) / folder for folder in self.root_candidates]

    def _markers_in(self, root: Path) -> int:
        return sum((root / marker).exists() for marker in self.root_markers)

    def _not_found_reason(self, data_root: Path) -> str:
        places = ", ".join(str(path) for path in self._candidates(data_root))
        return (
            f"{self.dataset} not found: none of {places} holds {' and '.join(self.root_markers)}; "
            f"download {self.dataset} from {self.url}"
        )

    def _complete_samples(self, root: Path) -> dict[str, list[Sample]]:
        """The samples of each split; :class:`DataError` naming what is missing when the dataset is incomplete."""
        absent_markers = [root / marker for marker in self.root_markers if not (root / marker).exists()]
        if absent_markers:  # before listing samples, which may need the marked folders
            raise DataError(self.missing_files_reason(root, absent_markers))
        samples = {split: self.samples(root, split) for split in SPLITS}
        empty = [split for split in SPLITS if not samples[split]]
        if empty:
            raise DataError(
                f"{self.dataset} in {root} has no {empty[0]} images; download {self.dataset} again from {self.url}"
            )
        absent = self._absent_files(samples)
        if absent:
            raise DataError(self.missing_files_reason(root, absent))
        return samples

    def _refuse_empty_masks(self, split: str, data: SegmentationSplit, samples: list[Sample]) -> None:
        """:class:`DataError` when every mask of ``split`` is empty: nothing to train on or to score (such
        masks are usually stored in a way the reader does not expect)."""
        if bool(data.masks.any()):
            return
        # Each sample's label files; a sample without any is named by its image.
        files = list(dict.fromkeys(path for sample in samples for path in sample.labels or (sample.image,)))
        named = ", ".join(str(path) for path in files[:_NAMED_FILES])
        more = f" and {len(files) - _NAMED_FILES} more" if len(files) > _NAMED_FILES else ""
        raise DataError(
            f"all {len(samples)} {split} masks of {self.dataset} are empty ({len(files)} label files: {named}{more}); "
            f"nothing to train on or score. Check that the masks mark the {self.target} with non-zero pixels"
        )

    def _absent_files(self, samples: dict[str, list[Sample]]) -> list[Path]:
        images = [sample.image for sample in _flat(samples)]
        labels = [path for sample in _flat(samples) for path in sample.labels]
        label_present = [path.is_file() for path in labels]
        # Optional labels may be absent one by one, but not all of them: that is a missing folder.
        tolerated = self.optional_labels and any(label_present)
        absent_labels = [] if tolerated else [path for path, ok in zip(labels, label_present, strict=True) if not ok]
        return [path for path in images if not path.is_file()] + absent_labels

    def _prepare(self, samples: dict[str, list[Sample]]) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for split, split_samples in samples.items():
            prepared = [self._prepare_sample(sample) for sample in split_samples]
            arrays[f"{split}_images"] = np.stack([image for image, _ in prepared]).transpose(0, 3, 1, 2).copy()
            arrays[f"{split}_masks"] = np.stack([mask for _, mask in prepared])
        return arrays

    def _prepare_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        try:
            image = self._scaled(self.read_image_file(sample.image), sample.image)
            labels = [(path, self.read_label_file(path)) for path in self._present_labels(sample)]
        except DataError as error:
            raise DataError(f"{error}. Replace it with an intact copy of {self.dataset} ({self.url}).") from error
        mask = self._merged(labels, sample.image, image.shape[:2])
        preparation = self.preparation
        if preparation.fundus_crop:
            box = fundus_roi_box(image, preparation.roi_threshold, preparation.roi_margin)
            image, mask = crop(image, box), crop(mask, box)
        return resize_image(image, preparation.size), resize_mask(mask, preparation.size, preparation.resize_threshold)

    def _present_labels(self, sample: Sample) -> list[Path]:
        return [path for path in sample.labels if not self.optional_labels or path.is_file()]

    def _scaled(self, image: np.ndarray, path: Path) -> np.ndarray:
        """The image after the preparation's invert and min-max steps, as ``uint8``."""
        invert, min_max = self.preparation.invert, self.preparation.min_max
        if not min_max and image.dtype != np.uint8:
            raise DataError(f"{path} read as {image.dtype}: without min_max an image must read as uint8")
        if not (invert or min_max):
            return image
        values = image.astype(np.float64)
        if invert:
            # Negation is enough before min-max; alone, it is completed to 255 - value below.
            values = -values
        if min_max:
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
        else:
            values += 255
        return np.rint(values).astype(np.uint8)

    def _merged(
        self, labels: list[tuple[Path, np.ndarray]], image_path: Path, image_shape: tuple[int, ...]
    ) -> np.ndarray:
        """The union of the labels, checked against the image's size unless labels may have their own."""
        own_size = self.preparation.label_size_may_differ and labels
        shape = labels[0][1].shape if own_size else image_shape
        merged = np.zeros(shape, bool)
        for path, label in labels:
            if label.shape != shape:
                whose = "the first label" if own_size else f"its image {image_path}"
                raise DataError(f"{path} is {label.shape[1]}x{label.shape[0]} but {whose} is {shape[1]}x{shape[0]}")
            merged |= label
        return merged


class LungLandmarks:
    """Mixin for a task whose masks are both lungs: lung apices and costophrenic angles as its landmarks."""

    landmarks = LUNG_LANDMARKS

    def mask_landmarks(self, masks: np.ndarray) -> torch.Tensor:
        return lung_landmarks(masks)


class DiscLandmarks:
    """Mixin for a task whose masks are the optic disc: its centre as the landmark."""

    landmarks = DISC_LANDMARKS

    def mask_landmarks(self, masks: np.ndarray) -> torch.Tensor:
        return disc_landmarks(masks)


class XRayTask(PreparedTask):
    """LD's chest X-ray protocol: one grey channel, no flips (LD's are commented out), rotation within 30
    degrees, label fractions 0.2 to 1.0."""

    modality = "cxr"
    channels = 1
    flips = False
    rotation_degrees = 30.0
    label_fractions = (0.2, 0.4, 0.6, 0.8, 1.0)


def _split(
    arrays: dict[str, np.ndarray],
    split: str,
    samples: dict[str, list[Sample]],
    landmarks: Callable[[np.ndarray], torch.Tensor | None],
) -> SegmentationSplit:
    ids = tuple(sample.id for sample in samples[split])
    masks = arrays[f"{split}_masks"]
    return SegmentationSplit(
        torch.from_numpy(arrays[f"{split}_images"]), torch.from_numpy(masks), ids, landmarks(masks)
    )


def _flat(samples: dict[str, list[Sample]]) -> list[Sample]:
    return [sample for split in SPLITS for sample in samples[split]]
