"""``ssl-bench data check``: per task, whether its data is found, complete and as large as it should be."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssl_bench.errors import DataError
from ssl_bench.plugins import Registry
from ssl_bench.task import Task


@dataclass(frozen=True)
class DataReport:
    task: str
    #: "found", "warning" (found, counts differ), "missing" (no dataset folder) or "error" (found but incomplete,
    #: unreadable or with all-empty masks: load raised DataError)
    status: str
    detail: str


def _counts(task: Task, data_root: Path | None) -> DataReport:
    data = task.load(data_root)
    found = (len(data.train), len(data.test))
    detail = f"{found[0]} train, {found[1]} test images"
    if task.expected_counts is not None and found != tuple(task.expected_counts):
        expected = task.expected_counts
        return DataReport(
            task.name,
            "warning",
            f"{detail}; the official release has {expected[0]} train, {expected[1]} test: this copy differs",
        )
    return DataReport(task.name, "found", detail)


def check_task_data(task: Task, data_root: Path | None) -> DataReport:
    availability = task.availability(data_root)
    if not availability.ok:
        where = f" ({task.url})" if task.url and task.url not in availability.reason else ""
        return DataReport(task.name, "missing", availability.reason + where)
    try:
        return _counts(task, data_root)
    except DataError as error:
        return DataReport(task.name, "error", str(error))


def check_data(registry: Registry, data_root: Path | None) -> list[DataReport]:
    """One report per registered task, in registration order."""
    return [check_task_data(task, data_root) for task in registry.tasks.values()]
