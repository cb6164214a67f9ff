"""DICOM reading shared by the task modules: pydicom imported on demand (an extra) and its errors as DataError."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ssl_bench.api import DataError


def import_pydicom(purpose: str):
    """pydicom, or a :class:`DataError` saying that ``purpose`` ("reading SIIM-ACR DICOM files") needs it."""
    try:
        import pydicom  # optional: only the tasks that read DICOM need it
        import pydicom.errors
    except ImportError as error:
        raise DataError(f"{purpose} needs pydicom: pip install 'ssl-bench[dicom]'") from error
    return pydicom


@contextlib.contextmanager
def dicom_errors(path: Path, pydicom) -> Iterator[None]:
    """Turns pydicom's errors for ``path`` into :class:`DataError` naming it."""
    try:
        yield
    except pydicom.errors.InvalidDicomError as error:
        raise DataError(f"{path} is not a DICOM file: {error}") from error
    except (OSError, ValueError, AttributeError, RuntimeError, NotImplementedError, EOFError) as error:
        # pydicom reports unreadable files, absent elements or pixel data and missing decoders through these.
        raise DataError(f"{path} is not a readable DICOM image: {error}") from error
