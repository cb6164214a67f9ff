"""Listing a dataset's image files, and the seeded split of the datasets whose owners publish none."""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from ssl_bench.api import DataError
from ssl_bench.api.data import IMAGE_SUFFIXES

#: The seeded split: one image in TEST_SHARE is a test image.
SPLIT_SEED = 0
TEST_SHARE = 5


def seeded_order(ids: Iterable[str], seed: int = SPLIT_SEED) -> list[str]:
    """``ids`` sorted by the SHA-256 of ``"<seed>:<id>"``: a shuffle that no library version can change."""
    return sorted(ids, key=lambda image_id: hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest())


def seeded_split(ids: Iterable[str], seed: int = SPLIT_SEED) -> dict[str, tuple[str, ...]]:
    """The split used where the owners publish none.

    In :func:`seeded_order`, the first ``n // 5`` ids are the test split (listed sorted) and the rest the
    training list, in that shuffled order (the harness draws labelled and validation images from it at random).
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
    when two files give one id (``a.png`` and ``a.jpg``): which one is meant? And when a name of an image is
    not a file (a symbolic link that loops or points nowhere, a folder): dropping it would shrink a split.
    """
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in extensions or not path.stem.endswith(suffix):
            continue
        if not path.is_file():
            raise DataError(f"{path} is not an image file but {_not_a_file(path)}; replace it with the image")
        image_id = path.stem[: len(path.stem) - len(suffix)]
        if image_id in found:
            raise DataError(f"{found[image_id]} and {path} have the same name: keep one of them")
        found[image_id] = path
    return found


def _not_a_file(path: Path) -> str:
    """What ``path``, named like an image but not a file, is instead."""
    try:
        path.stat()
    except OSError as error:
        if path.is_symlink():
            what = "loops" if error.errno == errno.ELOOP else f"points to {os.readlink(path)}, which is absent"
            return f"a symbolic link that {what}"
        return f"unreadable ({error.strerror})"
    return "a folder" if path.is_dir() else "not a regular file"
