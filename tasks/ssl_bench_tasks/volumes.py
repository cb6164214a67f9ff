"""Volume tasks: 3-D volumes read as 2-D slice tasks, in the Medical Segmentation Decathlon's layout, which most
public 3-D sets follow: ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz`` (``dataset.json`` beside them is
not needed; ``imagesTs/`` has no labels and is not read). A volume is a NIfTI file (``.nii.gz`` or ``.nii``) or a
folder ``<case>/`` holding one DICOM series (its slices ordered along their normal, HU from the rescale tags; pydicom,
``pip install 'ssl-bench[dicom]'``); an image and its label may be either, on the same grid.

Each volume is turned to its closest canonical orientation (RAS) and cut along ``axis`` (0 sagittal, 1 coronal,
2 axial), each slice shown as a radiologist would (``np.rot90``). Intensities become 0..255 by a ``window`` (CT,
in HU: ``[-160, 240]`` for the abdomen) or, without one, by the volume's ``percentiles`` (MRI: 0.5th to 99.5th). A
pixel is foreground where its label is one of ``foreground`` (any non-zero label by default). Slices without
foreground are dropped unless ``keep_empty``. Slices are resized to ``size`` px. The volume is each slice's
group: the seeded split takes whole volumes, so no patient spans train and test.

Built in: the ten Decathlon tasks as ``msd-<name>`` (``msd-spleen`` reads ``<data-root>/Task09_Spleen``), the
first MR sequence of a multi-sequence set (FLAIR for BrainTumour, T2 for Prostate). Your own, in the run file::

    [tasks.my-livers]
    type = "volumes"
    folder = "livers"          # under --data-root: imagesTr/ and labelsTr/ of NIfTI files with the same names
    modality = "ct-abdomen"    # pretraining pools and tasks meet by modality
    target = "liver"
    axis = 2                   # axial (the default)
    window = [-160, 240]       # CT: HU mapped to 0..255; absent: per-volume percentiles
    foreground = [1]           # label values that count (default: any non-zero)
    keep_empty = false         # keep slices without foreground
    size = 256
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_bench.api import Availability, DataError, SegmentationData, SegmentationSplit, Task, hookimpl
from ssl_bench.api.data import prepared_arrays, resize_image, resize_mask
from ssl_bench_tasks._dicom import dicom_errors, import_pydicom
from ssl_bench_tasks._files import grouped_split

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: DICOM's patient axes (LPS) to NIfTI's (RAS): x and y point the other way.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
MSD_URL = "http://medicaldecathlon.com/"
MSD_CITATION = "M. Antonelli et al.: The Medical Segmentation Decathlon. Nature Communications 13:4128, 2022"
ABDOMEN_WINDOW = (-160.0, 240.0)


@dataclass(frozen=True)
class VolumeSpec:
    """A volume task (see the module's docstring for each key)."""

    name: str
    folder: str
    modality: str
    target: str = "foreground"
    axis: int = 2
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    foreground: tuple[int, ...] | None = None
    keep_empty: bool = False
    size: int = 256
    #: Which image of a 4-D volume (several MR sequences) is read.
    sequence: int = 0
    description: str = ""
    url: str = ""
    licence: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        where = f"volume task {self.name!r}"
        for key in ("folder", "modality", "target"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise DataError(f"{where}: {key} must be a non-empty text")
        if self.axis not in (0, 1, 2) or isinstance(self.axis, bool):
            raise DataError(f"{where}: axis must be 0 (sagittal), 1 (coronal) or 2 (axial), got {self.axis!r}")
        if type(self.size) is not int or self.size < 16 or type(self.sequence) is not int or self.sequence < 0:
            raise DataError(f"{where}: size must be a whole number >= 16 and sequence >= 0")
        if type(self.keep_empty) is not bool:
            raise DataError(f"{where}: keep_empty must be true or false")
        for key in ("window", "percentiles"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, self._range(key, getattr(self, key)))
        if self.foreground is not None:
            labels = tuple(self.foreground) if isinstance(self.foreground, (list, tuple)) else ()
            if not labels or not all(type(label) is int and label > 0 for label in labels):
                raise DataError(f"{where}: foreground must be label values > 0, e.g. [1, 2]; got {self.foreground!r}")
            object.__setattr__(self, "foreground", tuple(sorted(set(labels))))

    def _range(self, key: str, value: object) -> tuple[float, float]:
        pair = tuple(value) if isinstance(value, (list, tuple)) else ()
        if len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
            raise DataError(f"volume task {self.name!r}: {key} must be two numbers [low, high]; got {value!r}")
        if not pair[0] < pair[1]:
            raise DataError(f"volume task {self.name!r}: {key} must be [low, high] with low < high; got {value!r}")
        return float(pair[0]), float(pair[1])

    def fingerprint(self) -> str:
        """A short hash of what shapes the slices (not the texts that describe the task)."""
        shaping = {key: value for key, value in dataclasses.asdict(self).items() if key not in _TEXTS}
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]


_TEXTS = ("name", "description", "url", "licence", "citation")


class VolumeTask(Task):
    """Slices of NIfTI volumes or DICOM series in the Decathlon layout, as a :class:`VolumeSpec` says."""

    def __init__(self, spec: VolumeSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.modality = spec.modality
        self.channels = 1
        self.target = spec.target
        self.description = spec.description or f"{spec.target} in slices of the volumes in {spec.folder}"
        self.url = spec.url or f"<data-root>/{spec.folder} with imagesTr/ and labelsTr/ (NIfTI)"
        self.licence, self.citation = spec.licence, spec.citation
        self.version = f"1-{spec.fingerprint()}"

    def image_group(self, image_id: str) -> str:
        return image_id.rsplit("_s", 1)[0]  # the volume: ids are <case>_s<slice>

    def _folder(self, data_root: Path | None) -> Path | None:
        folder = None if data_root is None else Path(data_root) / self.spec.folder
        return folder if folder is not None and (folder / "labelsTr").is_dir() else None

    def availability(self, data_root: Path | None) -> Availability:
        if self._folder(data_root) is None:
            where = "no data folder given" if data_root is None else f"{Path(data_root) / self.spec.folder} not found"
            return Availability.missing(f"{where}: it needs imagesTr/ and labelsTr/ of NIfTI volumes; see {self.url}")
        return Availability.found()

    def load(self, data_root: Path | None) -> SegmentationData:
        root = self._folder(data_root)
        if root is None:
            raise DataError(self.availability(data_root).reason)
        cases = self._cases(root)
        files = [file for pair in cases.values() for path in pair for file in _files_of(path)]
        parameters = dataclasses.asdict(self.spec)
        arrays = prepared_arrays(self.name, files, root, self.version, parameters, lambda: self._slices(cases))
        ids = [str(image_id) for image_id in arrays["ids"]]
        groups = dict(zip(ids, (str(group) for group in arrays["groups"]), strict=True))
        if len(set(groups.values())) < 2:
            raise DataError(f"{root}: slices of {len(set(groups.values()))} volume(s); a split needs two or more")
        row = {image_id: index for index, image_id in enumerate(ids)}
        splits = {}
        for split, chosen in grouped_split(groups).items():
            rows = [row[image_id] for image_id in chosen]
            splits[split] = SegmentationSplit(
                torch.from_numpy(arrays["images"][rows]), torch.from_numpy(arrays["masks"][rows]), tuple(chosen)
            )
        return SegmentationData(**splits)

    def _cases(self, root: Path) -> dict[str, tuple[Path, Path]]:
        """Case -> (image, label) for every labelled volume."""
        labels, images = _volumes_in(root / "labelsTr"), _volumes_in(root / "imagesTr")
        if not labels:
            raise DataError(f"{root / 'labelsTr'} holds no volume (.nii.gz, .nii or a DICOM series folder)")
        missing = sorted(set(labels) - set(images))
        if missing:
            raise DataError(
                f"{len(missing)} labelled volume(s) lack their image, first {missing[0]} "
                f"({labels[missing[0]]}); put it in {root / 'imagesTr'}"
            )
        return {case: (images[case], labels[case]) for case in sorted(labels)}

    def _slices(self, cases: dict[str, tuple[Path, Path]]) -> dict[str, np.ndarray]:
        images, masks, ids, groups = [], [], [], []
        for case, (image_path, label_path) in cases.items():
            volume, labels = read_volume(image_path), read_volume(label_path)
            if volume.ndim == 4:
                volume = volume[..., self.spec.sequence]
            if volume.shape != labels.shape:
                raise DataError(f"{image_path}: image {volume.shape} and label {labels.shape} differ")
            grey = self._intensities(volume)
            foreground = labels > 0 if self.spec.foreground is None else np.isin(labels, self.spec.foreground)
            for index in range(volume.shape[self.spec.axis]):
                mask = np.rot90(np.take(foreground, index, axis=self.spec.axis))
                if not (mask.any() or self.spec.keep_empty):
                    continue
                image = np.rot90(np.take(grey, index, axis=self.spec.axis))
                images.append(resize_image(np.ascontiguousarray(image)[..., None], self.spec.size).transpose(2, 0, 1))
                masks.append(resize_mask(np.ascontiguousarray(mask), self.spec.size))
                ids.append(f"{case}_s{index:03d}")
                groups.append(case)
        if not images:
            raise DataError(
                f"no slice of the {len(cases)} volumes holds foreground {self.spec.foreground or 'non-zero'}"
            )
        return {"images": np.stack(images), "masks": np.stack(masks), "ids": np.array(ids), "groups": np.array(groups)}

    def _intensities(self, volume: np.ndarray) -> np.ndarray:
        """The volume as uint8: its window (CT) or percentiles (MRI) mapped to 0..255."""
        volume = volume.astype(np.float32)
        low, high = self.spec.window or tuple(np.percentile(volume, self.spec.percentiles))
        scaled = (np.clip(volume, low, high) - low) / max(high - low, 1e-6)
        return np.round(scaled * 255).astype(np.uint8)


def _volumes_in(folder: Path) -> dict[str, Path]:
    """Case -> volume for the NIfTI files and DICOM series folders in ``folder`` (``._`` files that macOS leaves in
    archives are not volumes)."""
    found = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        case = next((path.name.removesuffix(suffix) for suffix in NIFTI_SUFFIXES if path.name.endswith(suffix)), None)
        if path.is_dir():
            case = path.name
        if case is not None and not path.name.startswith("."):
            found[case] = path
    return found


def _files_of(volume: Path) -> list[Path]:
    return sorted(path for path in volume.iterdir() if path.is_file()) if volume.is_dir() else [volume]


def read_volume(path: Path) -> np.ndarray:
    """The volume at ``path`` (a NIfTI file, or a folder of one DICOM series) in its closest canonical (RAS)
    orientation; :class:`DataError` naming a file that cannot be read."""
    import nibabel

    image = read_dicom_series(path) if path.is_dir() else None
    if image is None:
        try:
            image = nibabel.load(path)
        except Exception as error:  # nibabel's many ways of saying "not a NIfTI file"
            raise DataError(f"{path} is not a readable NIfTI volume ({type(error).__name__}: {error})") from error
    return np.asanyarray(nibabel.as_closest_canonical(image).dataobj)


def read_dicom_series(folder: Path):
    """The DICOM series in ``folder`` as a NIfTI image: slices ordered along their normal, values in the rescaled
    unit (HU for CT), the affine from the position, orientation and spacing tags (LPS turned to RAS)."""
    import nibabel

    pydicom = import_pydicom(f"reading the DICOM series {folder}")
    slices = []
    for path in _files_of(folder):
        with dicom_errors(path, pydicom):
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array.astype(np.float32)
            pixels = pixels * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))
            geometry = [np.array(dataset.ImageOrientationPatient, float), [float(v) for v in dataset.PixelSpacing]]
            slices.append((np.array(dataset.ImagePositionPatient, float), geometry, pixels))
    if not slices:
        raise DataError(f"{folder} holds no DICOM file: a volume folder holds the slices of one series")
    (orientation, (row_spacing, column_spacing)), shape = slices[0][1], slices[0][2].shape
    if any(not np.allclose(s[1][0], orientation) or s[2].shape != shape for s in slices):
        raise DataError(f"{folder}: its slices differ in orientation or size: it holds more than one series")
    along_rows, along_columns = orientation[:3], orientation[3:]
    normal = np.cross(along_rows, along_columns)
    slices.sort(key=lambda s: float(s[0] @ normal))
    step = (slices[-1][0] - slices[0][0]) / (len(slices) - 1) if len(slices) > 1 else normal
    affine = np.eye(4)
    # Voxel (i, j, k) is column i, row j of slice k: the pixel array's transpose.
    affine[:3, :3] = np.column_stack([along_rows * column_spacing, along_columns * row_spacing, step])
    affine[:3, 3] = slices[0][0]
    volume = np.stack([s[2].T for s in slices], axis=-1)
    return nibabel.Nifti1Image(volume, LPS_TO_RAS @ affine)


def _msd(number: int, folder: str, modality: str, target: str, **options: object) -> VolumeSpec:
    return VolumeSpec(
        name=f"msd-{folder.lower()}",
        folder=f"Task{number:02d}_{folder}",
        modality=modality,
        target=target,
        description=f"Medical Segmentation Decathlon {folder}: {target}, slices of the labelled training volumes",
        url=MSD_URL,
        licence="CC BY-SA 4.0",
        citation=MSD_CITATION,
        **options,
    )


#: The Decathlon's ten tasks. Labels merged to one structure where a set has several (tumour sub-regions, organ
#: and tumour), except HepaticVessel, whose vessels (1) are kept apart from its tumours (2).
DECATHLON = (
    _msd(1, "BrainTumour", "mri-brain", "brain tumour (all sub-regions), FLAIR"),
    _msd(2, "Heart", "mri-heart", "left atrium"),
    _msd(3, "Liver", "ct-abdomen", "liver and its tumours", window=ABDOMEN_WINDOW),
    _msd(4, "Hippocampus", "mri-brain", "hippocampus (head and body)"),
    _msd(5, "Prostate", "mri-prostate", "prostate (both zones), T2"),
    _msd(6, "Lung", "ct-chest", "lung tumours", window=(-1000.0, 400.0)),
    _msd(7, "Pancreas", "ct-abdomen", "pancreas and its tumours", window=ABDOMEN_WINDOW),
    _msd(8, "HepaticVessel", "ct-abdomen", "hepatic vessels", window=ABDOMEN_WINDOW, foreground=(1,)),
    _msd(9, "Spleen", "ct-abdomen", "spleen", window=ABDOMEN_WINDOW),
    _msd(10, "Colon", "ct-abdomen", "colon cancer", window=ABDOMEN_WINDOW),
)


def _spec(name: str, table: Mapping[str, object]) -> VolumeSpec:
    where = f"the run file's [tasks.{name}]"
    keys = {field.name for field in dataclasses.fields(VolumeSpec)} - {"name"}
    options = {key: value for key, value in table.items() if key != "type"}
    unknown, missing = set(options) - keys, {"folder", "modality"} - set(options)
    if unknown or missing:
        raise DataError(f"{where}: unknown {sorted(unknown)}, missing {sorted(missing)}; the keys are {sorted(keys)}")
    try:
        return VolumeSpec(name=name, **options)
    except DataError as error:
        raise DataError(f"{where}: {error}") from error


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None], task_tables: Mapping[str, Mapping]) -> None:
    defined = [_spec(name, table) for name, table in task_tables.items() if table["type"] == "volumes"]
    for spec in [*DECATHLON, *defined]:
        register(VolumeTask(spec))
