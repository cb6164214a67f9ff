"""Folder tasks: a dataset that is just ``images/`` and ``masks/`` with matching stems, configured without code.

This module also holds what the other file-based datasets without an LD split share: listing images by
extension (:func:`image_files`), the seeded split (:func:`seeded_split`) and LD's X-ray settings
(:class:`XRayTask`).

Any common image format is accepted (PNG, JPEG, BMP, TIFF, GIF, PPM/PGM, in any case); other files, such as
``ATTRIBUTION.txt``, are ignored. A mask is read as grey and binarised at > 127, so 3-channel and JPEG masks
work. Images and masks are resized to 512x512.

Split: the seeded split of :func:`seeded_split`, which the dataset modules without an official split use too.

``cxr-lungs-folder`` (``<data-root>/CXR_lungs_512``) is registered by default. Users add their own tasks in a
TOML file named by ``SSL_BENCH_FOLDER_TASKS``, one table each::

    [folder_tasks.my-polyps]
    folder = "polyps"          # under --data-root; holds images/ and masks/
    modality = "endoscopy"     # pretraining pools and tasks meet by modality
    channels = 3               # 1 (grey) or 3 (RGB)
    target = "polyps"          # optional, like the keys below
    mask_suffix = "_mask"      # masks/<stem>_mask.png for images/<stem>.jpg; default ""
    dataset = "My polyps"      # the name messages use; default the task's name
    description = "..."
    url = "..."
    licence = "..."
    citation = "..."

Modality ``cxr`` gets LD's X-ray protocol (rotation 30 degrees, label fractions 0.2 to 1.0); any other 180
degrees and the full training list. A task's version hashes what shapes its data (folder, modality,
channels, mask suffix), so that editing its table never reuses stale results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_bench.api import IMAGE_SUFFIXES, Availability, DataError, hookimpl, read_image
from ssl_bench_tasks._prepared import PreparedTask, Sample

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

CONFIG_VARIABLE = "SSL_BENCH_FOLDER_TASKS"
#: The seeded split: one image in TEST_SHARE is a test image.
SPLIT_SEED = 0
TEST_SHARE = 5

_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")


def seeded_order(ids: Iterable[str], seed: int = SPLIT_SEED) -> list[str]:
    """``ids`` sorted by the SHA-256 of ``"<seed>:<id>"``: a shuffle that no library version can change."""
    return sorted(ids, key=lambda image_id: hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest())


def seeded_split(ids: Iterable[str], seed: int = SPLIT_SEED) -> dict[str, tuple[str, ...]]:
    """The split used where the owners publish none.

    In :func:`seeded_order`, the first ``n // 5`` ids are the test split (listed sorted) and the rest the
    training list, kept in that shuffled order so that its validation and label-fraction prefixes are
    random samples rather than the lowest ids.
    """
    order = seeded_order(ids, seed)
    test_count = len(order) // TEST_SHARE
    return {"train": tuple(order[test_count:]), "test": tuple(sorted(order[:test_count]))}


def split_counts(total: int) -> tuple[int, int]:
    """The (train, test) sizes that :func:`seeded_split` gives ``total`` images."""
    return total - total // TEST_SHARE, total // TEST_SHARE


def image_files(folder: Path, suffix: str = "", extensions: frozenset[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Id -> file for the images in ``folder`` named ``<id><suffix><extension>``, extensions in any case.

    Other files (``ATTRIBUTION.txt``) are ignored, and an absent folder has none. Raises :class:`DataError`
    when two files give one id (``a.png`` and ``a.jpg``): which one is meant?
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions or not path.stem.endswith(suffix) or not path.is_file():
            continue
        image_id = path.stem[: len(path.stem) - len(suffix)]
        if image_id in found:
            raise DataError(f"{found[image_id]} and {path} have the same name: keep one of them")
        found[image_id] = path
    return found


def read_grey_mask(path: Path, threshold: int) -> np.ndarray:
    """A mask file converted to grey (colour JPEG masks are not exactly grey) and kept where ``>= threshold``."""
    return read_image(path, channels=1)[..., 0] >= threshold


class XRayTask(PreparedTask):
    """LD's chest X-ray protocol: one grey channel, rotation within 30 degrees, label fractions 0.2 to 1.0."""

    modality = "cxr"
    channels = 1
    rotation_degrees = 30.0
    label_fractions = (0.2, 0.4, 0.6, 0.8, 1.0)


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

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.fullmatch(self.name):
            raise DataError(f"folder task name {self.name!r} must be lower-case letters, digits and hyphens")
        wrong_type = [field.name for field in dataclasses.fields(self) if not self._has_its_type(field)]
        if wrong_type:
            raise DataError(f"folder task {self.name!r}: {', '.join(wrong_type)} must be text")
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
    """A segmentation task read from ``images/`` and ``masks/``; its metadata come from a :class:`FolderSpec`."""

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
            self.rotation_degrees = XRayTask.rotation_degrees
            self.label_fractions = XRayTask.label_fractions
        self.expected_counts = None if spec.expected_total is None else split_counts(spec.expected_total)
        self.version = f"1-{spec.fingerprint()}"

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

    def availability(self, data_root: Path | None) -> Availability:
        try:
            return super().availability(data_root)
        except DataError as error:  # two images with one name
            return Availability.missing(str(error))

    def read_label_file(self, path: Path) -> np.ndarray:
        return read_grey_mask(path, self.preparation.label_threshold)


CXR_LUNGS = FolderSpec(
    name="cxr-lungs-folder",
    folders=("CXR_lungs_512",),
    modality="cxr",
    channels=1,
    target="lungs",
    description="Lungs in 60 chest X-rays (30 Montgomery, 30 Shenzhen) at 512x512, read as a folder task",
    url="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
    licence="NLM public release; Shenzhen masks CC BY-NC-SA 4.0",
    citation=(
        "S. Jaeger, S. Candemir, S. Antani, Y.-X. J. Wáng, P.-X. Lu, G. Thoma: Two public chest X-ray datasets "
        "for computer-aided screening of pulmonary diseases. Quantitative Imaging in Medicine and Surgery "
        "4(6):475-477, 2014"
    ),
)
_SPEC_KEYS = frozenset(field.name for field in dataclasses.fields(FolderSpec)) - {"name", "folders", "expected_total"}


def configured_specs(config_file: Path) -> list[FolderSpec]:
    """The folder tasks of a TOML file's ``[folder_tasks.<name>]`` tables (see the module's docstring)."""
    try:
        with open(config_file, "rb") as stream:
            tables = tomllib.load(stream).get("folder_tasks", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DataError(f"{CONFIG_VARIABLE}: cannot read {config_file}: {error}") from error
    if not isinstance(tables, dict):
        raise DataError(f"{config_file}: folder_tasks must hold one table per task, [folder_tasks.<name>]")
    return [_spec(name, values, config_file) for name, values in tables.items()]


def _spec(name: str, values: object, config_file: Path) -> FolderSpec:
    where = f"{config_file} [folder_tasks.{name}]"
    if not isinstance(values, dict):
        raise DataError(f'{where} must be a table of keys, e.g. folder = "my_scans"')
    unknown = set(values) - _SPEC_KEYS - {"folder"}
    missing = {"folder", "modality", "channels"} - set(values)
    if unknown or missing:
        allowed = ", ".join(sorted(_SPEC_KEYS | {"folder"}))
        raise DataError(f"{where}: unknown {sorted(unknown)}, missing {sorted(missing)}; the keys are {allowed}")
    options = {key: value for key, value in values.items() if key != "folder"}
    try:
        return FolderSpec(name=name, folders=(values["folder"],), **options)
    except DataError as error:
        raise DataError(f"{where}: {error}") from error


def registered_specs() -> list[FolderSpec]:
    """The default folder tasks and those of the file named by ``SSL_BENCH_FOLDER_TASKS``."""
    config_file = os.environ.get(CONFIG_VARIABLE, "").strip()
    extra = configured_specs(Path(config_file).expanduser()) if config_file else []
    return [CXR_LUNGS, *extra]


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    for spec in registered_specs():
        register(FolderTask(spec))
