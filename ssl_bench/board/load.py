"""The board: every result record under a results folder loaded once, with the tables built from them once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from ssl_bench.board.tables import seed_table, summary_table
from ssl_bench.errors import DataError
from ssl_bench.record import FailureRecord, ResultRecord, read_failure, read_record


@dataclass
class Board:
    """What the Markdown leaderboard, the HTML report and the plots are made from: the records, the files left out
    (one line each), the failures, and the per-seed and summary tables, each built once on first use."""

    results_dir: Path
    records: list[ResultRecord]
    problems: list[str] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)

    @classmethod
    def load(cls, results_dir: Path) -> Board:
        """The board of ``results_dir``; a :class:`DataError` saying what to do if no job has finished there."""
        results_dir = Path(results_dir)
        records, problems = load_results(results_dir)
        if not records:
            left_out = f" ({len(problems)} left out: {problems[0]})" if problems else ""
            raise DataError(
                f"no finished jobs under {results_dir / 'runs'} (no valid runs/*/result.json){left_out}; run the "
                "benchmark first, or point to the results folder that holds runs/"
            )
        return cls(results_dir, records, problems, load_failures(results_dir))

    @cached_property
    def seeds(self) -> pd.DataFrame:
        """One row per seed of every cell (:func:`ssl_bench.board.tables.seed_table`)."""
        return seed_table(self.records, self.failures)

    @cached_property
    def summary(self) -> pd.DataFrame:
        """One row per cell, with intervals and claims (:func:`ssl_bench.board.tables.summary_table`)."""
        return summary_table(self.records, self.failures, self.seeds)


def load_results(results_dir: Path) -> tuple[list[ResultRecord], list[str]]:
    """Every valid record under ``results_dir/runs``, in job-id order, and one line per file that was not.

    A job folder without ``result.json`` has not finished and is skipped silently; a corrupt file or one of
    another schema version is left out and named in the second list (the runner re-runs such jobs).
    """
    records, problems = [], []
    for path in sorted(Path(results_dir).glob("runs/*/result.json")):
        try:
            records.append(read_record(path))
        except DataError as error:
            problems.append(str(error))
    return records, problems


def load_failures(results_dir: Path) -> list[FailureRecord]:
    """Every readable ``runs/*/error.json`` under ``results_dir``, in job-id order."""
    failures = []
    for path in sorted(Path(results_dir).glob("runs/*/error.json")):
        with contextlib.suppress(DataError):  # a failure record that cannot be read has nothing to show
            failures.append(read_failure(path))
    return failures
