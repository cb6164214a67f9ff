"""Listing a dataset's image files, and the seeded split of the datasets whose owners publish none."""

from __future__ import annotations

import csv
import errno
import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping
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


def grouped_split(groups: Mapping[str, str], seed: int = SPLIT_SEED) -> dict[str, tuple[str, ...]]:
    """:func:`seeded_split` of whole groups (``groups``: image id -> its group, e.g. the patient): the groups in
    :func:`seeded_order` go to test until it holds at least one image in five (a group that would leave no
    training image is passed over), so no group spans both splits. The training list is its ids in
    :func:`seeded_order`; test is sorted."""
    members: dict[str, list[str]] = {}
    for image_id, group in groups.items():
        members.setdefault(group, []).append(image_id)
    test: list[str] = []
    for group in seeded_order(members, seed):
        if len(test) >= len(groups) // TEST_SHARE:
            break
        if len(test) + len(members[group]) < len(groups):
            test += members[group]
    held_out = set(test)
    return {
        "train": tuple(image_id for image_id in seeded_order(groups, seed) if image_id not in held_out),
        "test": tuple(sorted(test)),
    }


def read_id_table(path: Path, ids: list[str], column: str, what: str) -> dict[str, str]:
    """Image id -> its ``column`` in the CSV file at ``path`` (columns ``id`` and ``column``), for exactly ``ids``,
    each once; anything else is a :class:`DataError` naming the file (``what`` it is: "split file")."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{what} {path} cannot be read ({error}); write a CSV with columns id,{column}") from error
    if not rows or not {"id", column} <= set(rows[0]):
        raise DataError(f"{what} {path} must have columns id and {column}, one row per image")
    table = {row["id"]: row[column] for row in rows}
    problems = {
        "lists ids with no image": sorted(set(table) - set(ids)),
        "does not list the images": sorted(set(ids) - set(table)),
        "lists more than once": sorted(i for i, count in Counter(row["id"] for row in rows).items() if count > 1),
        f"gives no {column} to": sorted(i for i, value in table.items() if not value),
    }
    for problem, which in problems.items():
        if which:
            raise DataError(f"{what} {path} {problem} {', '.join(which[:3])}{' ...' if len(which) > 3 else ''}")
    return table


def read_split_file(path: Path, ids: list[str]) -> dict[str, tuple[str, ...]]:
    """The split a CSV file gives (columns ``id`` and ``split``, ``train`` or ``test``), for exactly ``ids``; the
    training list in :func:`seeded_order`, test sorted. Anything else is a :class:`DataError` naming the file."""
    split = read_id_table(path, ids, "split", "split file")
    if wrong := sorted(i for i, name in split.items() if name not in ("train", "test")):
        raise DataError(f"split file {path} gives a split other than train or test to {', '.join(wrong[:3])}")
    test = sorted(image_id for image_id, name in split.items() if name == "test")
    if not test or len(test) == len(ids):
        raise DataError(f"split file {path} must put some images in train and some in test")
    return {"train": tuple(i for i in seeded_order(ids) if split[i] == "train"), "test": tuple(test)}


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
