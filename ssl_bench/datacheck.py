"""``ssl-bench data check``: per task, whether its data is found, complete and as large as it should be, and
whether numbered names of one series (``patient012_slice3``) span train and test; for a classification task also
its class balance per split, and whether its training labels are sorted."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_bench.errors import SslBenchError
from ssl_bench.plugins import Registry
from ssl_bench.task import ClassificationData, ClassificationSplit, Task, load_task_data


@dataclass(frozen=True)
class DataReport:
    task: str
    #: "found", "warning" (found, but the counts differ, a series of names spans train and test, or the training
    #: labels are sorted), "missing" (no dataset
    #: folder) or "error" (found but incomplete, unreadable or with all-empty masks, or its plugin broke: load raised)
    status: str
    detail: str
    #: Lines under the detail: a warning if a series of names spans train and test; a classification task's class
    #: balance per split, and a warning if its training labels are sorted.
    notes: tuple[str, ...] = ()


def _counts(task: Task, data_root: Path | None) -> DataReport:
    data = load_task_data(task, data_root)
    found = (len(data.train), len(data.test))
    detail = f"{found[0]} train, {found[1]} test images"
    warned = task.expected_counts is not None and found != tuple(task.expected_counts)
    if warned:
        expected = task.expected_counts
        detail += f"; the official release has {expected[0]} train, {expected[1]} test: this copy differs"
    notes: tuple[str, ...] = ()
    if leak := grouped_names_warning(data.train.ids, data.test.ids):
        notes, warned = (leak,), True
    if isinstance(data, ClassificationData):
        notes = (*notes, _class_balance(task, data))
        if sorted_warning := _sorted_labels_warning(data.train.labels):
            notes, warned = (*notes, sorted_warning), True
    return DataReport(task.name, "warning" if warned else "found", detail, notes)


#: A name numbered within a numbered series: ``patient012_slice3`` is number 3 of series ``patient012_slice``.
_SERIES_MEMBER = re.compile(r"^(.*\d\D+)\d+$")


def grouped_names_warning(train_ids: tuple[str, ...], test_ids: tuple[str, ...]) -> str | None:
    """A warning when series of numbered names (slices, visits, frames of one patient, as their names suggest)
    have members in both train and test: the split may leak a patient. None when no series spans both."""
    splits: dict[str, set[str]] = defaultdict(set)
    for split, ids in (("train", train_ids), ("test", test_ids)):
        for image_id in ids:
            if match := _SERIES_MEMBER.match(image_id):
                splits[match.group(1)].add(split)
    spanning = sorted(series for series, where in splits.items() if len(where) == 2)
    if not spanning:
        return None
    return (
        f"warning: {len(spanning)} series of numbered names have images in both train and test (e.g. "
        f"{spanning[0]}*); if a series is one patient's (slices, visits, eyes), the split leaks it: give the task a "
        "group rule (a folder task's group, e.g. group = '^(patient\\d+)_') or a split file"
    )


def _class_balance(task: Task, data: ClassificationData) -> str:
    what = "images with label" if task.multi_label else "images of class"
    splits = {"train": data.train, "val": data.val, "test": data.test}
    balance = ", ".join(f"{name} {_balance(split, task)}" for name, split in splits.items())
    return f"{what} {'/'.join(map(str, range(task.classes)))}: {balance}"


def _sorted_labels_warning(labels: torch.Tensor) -> str | None:
    runs, expected = label_runs(labels)
    # A random order's run count has a standard deviation below sqrt(expected): this many fewer is no accident.
    if runs >= expected - 4 * math.sqrt(expected):
        return None
    return (
        f"warning: the training labels are sorted: {runs} runs of equal labels where a random order gives about "
        f"{expected:.0f}, so a prefix of the list (a label fraction, an image cap) misses classes; draw subsets by "
        "a seeded permutation, as ssl-bench does"
    )


def _balance(split: ClassificationSplit, task: Task) -> str:
    """Images per class (or per label of a multi-label task) of ``split``, as counts and shares."""
    labels = split.labels
    counts = labels.sum(dim=0) if task.multi_label else torch.bincount(labels[:, 0], minlength=task.classes)
    shares = "/".join(f"{100 * count / max(len(split), 1):.0f}%" for count in counts.tolist())
    return f"{'/'.join(map(str, counts.tolist()))} ({shares})"


def label_runs(labels: torch.Tensor) -> tuple[int, float]:
    """The number of runs of equal label rows in ``labels (N, L)``, and its mean over random orders of the rows.

    Of the ``N - 1`` neighbouring pairs a random order makes, each joins two rows with equal labels with
    probability ``sum_k n_k (n_k - 1) / (N (N - 1))`` (``n_k`` rows of the k-th distinct label row), so the mean
    is ``N - sum_k n_k (n_k - 1) / N``.
    """
    n = len(labels)
    if n == 0:
        return 0, 0.0
    _, label_of, counts = torch.unique(labels, dim=0, return_inverse=True, return_counts=True)
    runs = 1 + int((label_of[1:] != label_of[:-1]).sum())
    return runs, n - float((counts * (counts - 1)).sum()) / n


def check_task_data(task: Task, data_root: Path | None) -> DataReport:
    availability = task.availability(data_root)
    if not availability.ok:
        where = f" ({task.url})" if task.url and task.url not in availability.reason else ""
        return DataReport(task.name, "missing", availability.reason + where)
    try:
        return _counts(task, data_root)
    except SslBenchError as error:  # the data is wrong (DataError), or the task's plugin broke (PluginError)
        return DataReport(task.name, "error", str(error))


def check_data(registry: Registry, data_root: Path | None) -> list[DataReport]:
    """One report per registered task, in registration order."""
    return [check_task_data(task, data_root) for task in registry.tasks.values()]
