"""SIIM-ACR pneumothorax: DICOM chest X-rays with run-length-encoded masks, positive cases only, as in LD.

The owners ship ``dicom-images-train/<study>/<series>/<image>.dcm`` and ``train-rle.csv`` (columns ``ImageId``
and `` EncodedPixels``, with a leading space). `` -1`` means no pneumothorax; an image with several
pneumothorax regions has one row each, merged here. The RLE holds (start, length) pairs whose starts are
relative to the end of the previous run, over the pixels in column-major order.

LD uses the 2669 images with pneumothorax, training on 1334 and testing on 1335 in the order of its
``ld-splits/Pneumothorax_SIIM.csv``, stored here. Images (8-bit, 1024x1024) and masks are resized to 512; the
``paper`` profile trains on batches of 8, as LD did for this large set. Reading DICOM needs pydicom, the
``dicom`` extra: ``pip install 'ssl-bench[dicom]'``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np

from ssl_bench.api import DataError, hookimpl
from ssl_bench.api.data import resize_mask
from ssl_bench_tasks._dicom import dicom_errors, import_pydicom
from ssl_bench_tasks._prepared import Sample, XRayTask

NO_PNEUMOTHORAX = "-1"
_ID_COLUMN = "ImageId"
_RLE_COLUMN = " EncodedPixels"


def decode_rle(rle: str, height: int, width: int) -> np.ndarray:
    """One SIIM RLE string -> ``bool (height, width)``; `` -1`` gives an empty mask.

    Relative starts are accumulated into absolute offsets over the flattened ``(width, height)`` array,
    which is then transposed: the runs go down the columns of the image.
    """
    text = rle.strip()
    mask = np.zeros(width * height, dtype=bool)
    if text == NO_PNEUMOTHORAX:
        return mask.reshape(height, width)
    try:
        numbers = np.array([int(token) for token in text.split()], dtype=np.int64)
    except ValueError as error:
        raise DataError(f"RLE {_excerpt(text)!r} holds something other than integers") from error
    if len(numbers) % 2 or (numbers < 0).any():
        raise DataError(f"RLE {_excerpt(text)!r} is not a list of non-negative (start, length) pairs")
    gaps, lengths = numbers[0::2], numbers[1::2]
    starts = np.cumsum(gaps) + np.cumsum(lengths) - lengths
    if len(starts) and starts[-1] + lengths[-1] > mask.size:
        raise DataError(f"RLE {_excerpt(text)!r} runs past the {width}x{height} image")
    for start, length in zip(starts, lengths, strict=True):
        mask[start : start + length] = True
    return mask.reshape(width, height).T


def _excerpt(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}..."


def decode_rows(rles: Iterable[str], height: int, width: int) -> np.ndarray:
    """The union of an image's RLE rows."""
    mask = np.zeros((height, width), dtype=bool)
    for rle in rles:
        mask |= decode_rle(rle, height, width)
    return mask


def read_rle_csv(path: Path) -> dict[str, list[str]]:
    """``train-rle.csv`` -> image id -> its RLE strings, in file order; :class:`DataError` naming the file."""
    rows: dict[str, list[str]] = {}
    try:
        with Path(path).open(newline="") as stream:
            reader = csv.DictReader(stream)
            missing = {_ID_COLUMN, _RLE_COLUMN} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path} lacks the column(s) {sorted(missing)}: not SIIM's train-rle.csv")
            for row in reader:
                if row[_RLE_COLUMN] is None:
                    raise DataError(f"{path} line {reader.line_num} has no{_RLE_COLUMN} value")
                rows.setdefault(row[_ID_COLUMN], []).append(row[_RLE_COLUMN])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} is not readable: {error}") from error
    return rows


def read_dicom(path: Path) -> np.ndarray:
    """The grey image of the DICOM file at ``path`` as ``uint8 (H, W)``, bright bone whatever its encoding.

    8-bit pixels (SIIM's) are kept; wider ones are scaled from their full range (``BitsStored``) to 8 bits,
    and MONOCHROME1 (high = dark) is inverted.
    """
    pydicom = import_pydicom("reading SIIM-ACR DICOM files")
    with dicom_errors(path, pydicom):
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise DataError(f"{path} holds pixels of shape {pixels.shape}, not one grey image")
    if pixels.dtype != np.uint8:
        full_range = 2 ** int(dataset.get("BitsStored", 16)) - 1
        pixels = np.round(np.clip(pixels, 0, full_range) * (255 / full_range)).astype(np.uint8)
    return 255 - pixels if dataset.get("PhotometricInterpretation") == "MONOCHROME1" else pixels


def dicom_size(path: Path) -> tuple[int, int]:
    """(rows, columns) of the DICOM image at ``path``, from its header alone."""
    pydicom = import_pydicom("reading SIIM-ACR DICOM files")
    with dicom_errors(path, pydicom):
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        return int(dataset.Rows), int(dataset.Columns)


def dicom_files(folder: Path) -> dict[str, Path]:
    """Image id (the file's stem, its SOP instance UID) -> file, for every ``.dcm`` under ``folder``."""
    return {path.stem: path for path in sorted(folder.rglob("*.dcm"))}


@functools.lru_cache(maxsize=1)
def _cached_rle_csv(path: Path, size: int, mtime_ns: int) -> dict[str, list[str]]:
    return read_rle_csv(path)


def rle_table(path: Path) -> dict[str, list[str]]:
    """:func:`read_rle_csv`, read once while the file stays the same."""
    try:
        stat = path.stat()
    except OSError as error:
        raise DataError(f"{path} is not readable: {error}") from error
    return _cached_rle_csv(path, stat.st_size, stat.st_mtime_ns)


SIIM_UID_PREFIX = "1.2.276.0.7230010.3.1.4.8323329."


def _ld_ids(split: str) -> tuple[str, ...]:
    """LD's list of ``split`` in its order; the package file stores each id without SIIM_UID_PREFIX."""
    text = resources.files("ssl_bench_tasks").joinpath(f"splits/siim-pneumothorax-{split}.txt").read_text()
    return tuple(SIIM_UID_PREFIX + suffix for suffix in text.split())


LD_IDS = {split: _ld_ids(split) for split in ("train", "test")}


class SiimPneumothorax(XRayTask):
    name = "siim-pneumothorax"
    description = "SIIM-ACR pneumothorax, positive cases: 1334 train / 1335 test chest X-rays (LD split), 512x512"
    target = "pneumothorax"
    url = "https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation"
    licence = "the SIIM-ACR competition's data terms (research use); cite the owners"
    citation = (
        "A. Zawacki, C. Wu, G. Shih, J. Elliott, M. Fomitchev, M. Hussain, P. Lakhani, P. Culliton, S. Bao: "
        "SIIM-ACR Pneumothorax Segmentation. Kaggle, 2019"
    )
    paper_batch_size = 8
    ordered_split = True  # LD's training list, in LD's order: its prefixes are LD's subsets
    expected_counts = (len(LD_IDS["train"]), len(LD_IDS["test"]))
    version = "1"
    dataset = "SIIM-ACR pneumothorax"
    root_candidates = ("siim-acr-pneumothorax", "SIIM-ACR", "siim", "")
    root_markers = ("dicom-images-train", "train-rle.csv")

    def samples(self, root: Path, split: str) -> list[Sample]:
        """LD's images that are present; the csv is each one's label file (and part of the cache key)."""
        dicoms = dicom_files(root / "dicom-images-train")
        rle_csv = root / "train-rle.csv"
        return [Sample(image_id, dicoms[image_id], (rle_csv,)) for image_id in LD_IDS[split] if image_id in dicoms]

    def read_image_file(self, path: Path) -> np.ndarray:
        return read_dicom(path)[..., None]

    # The base reads one mask per label file; SIIM's masks are rows of one csv, keyed by the image id.
    def _prepare_sample(self, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
        image, _ = super()._prepare_sample(dataclasses.replace(sample, labels=()))
        return image, resize_mask(self.mask(sample), self.preparation.size, self.preparation.resize_threshold)

    def mask(self, sample: Sample) -> np.ndarray:
        """The union of the sample's RLE rows, at its DICOM image's size."""
        (rle_csv,) = sample.labels
        rows = rle_table(rle_csv).get(sample.id)
        if rows is None:
            raise DataError(f"{rle_csv} has no row for {sample.id} ({sample.image}): download SIIM-ACR again")
        height, width = dicom_size(sample.image)
        try:
            return decode_rows(rows, height, width)
        except DataError as error:
            raise DataError(f"{rle_csv}, image {sample.id}: {error}") from error


@hookimpl
def ssl_bench_register_tasks(register: Callable[[object], None]) -> None:
    register(SiimPneumothorax())
