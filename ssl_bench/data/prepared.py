"""A disk cache of prepared task arrays, so that a task's second load starts at once.

The key hashes the source files' names, sizes and modification times, the task's version and its
preprocessing parameters: changing any of them prepares the data again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ssl_bench.results import CannotWrite, write_atomic


def cache_root() -> Path:
    """``$SSL_BENCH_CACHE``, by default ``~/.cache/ssl-bench``."""
    base = os.environ.get("SSL_BENCH_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "ssl-bench"


def file_listing(files: Sequence[Path], root: Path) -> list[list]:
    """Each file's name under ``root``, size and modification time: what changes when a file is replaced or added,
    read without opening any of them."""
    return [[str(path.relative_to(root)), (stat := path.stat()).st_size, stat.st_mtime_ns] for path in files]


def _key(files: Sequence[Path], root: Path, version: str, parameters: dict) -> str:
    text = json.dumps(
        {"version": version, "parameters": parameters, "files": file_listing(files, root)}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent or damaged (then they are prepared again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def prepared_arrays(
    name: str,
    files: Sequence[Path],
    root: Path,
    version: str,
    parameters: dict,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from the cache when ``files`` (under ``root``), version and parameters match."""
    path = cache_root() / "prepared" / f"{name}-{_key(files, root, version, parameters)}.npz"
    arrays = _read(path)
    if arrays is None:
        arrays = build()
        try:
            write_atomic(path, lambda stream: np.savez(stream, **arrays))
        except CannotWrite as error:  # a read-only or full cache only costs speed
            warnings.warn(f"could not cache prepared {name} data in {path}: {error}", stacklevel=2)
    return arrays
