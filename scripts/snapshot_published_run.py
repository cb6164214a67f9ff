"""Commit what a published run has finished so far, while it goes on: the records that exist now and the
leaderboards and report built from exactly those (a record written meanwhile waits for the next snapshot).

    python scripts/snapshot_published_run.py results/2026-12-05-cpu-300 [--commit]

Writes ``leaderboard.{csv,md,png}`` and ``report/index.html`` of the snapshot into the run's folder and, with
``--commit``, commits them with the snapshot's records (``git add`` of those files only).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from ssl_bench.board import write_boards

TABLES = ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "report/index.html")


def snapshot(run: Path) -> list[Path]:
    """The run's finished records now, and its boards rebuilt from them alone; every path to commit."""
    records = sorted([*run.glob("runs/*/result.json"), *run.glob("runs/*/error.json")])
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch)
        for path in [*records, run / "run-config.toml"]:
            (copy / path.relative_to(run)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy / path.relative_to(run))
        write_boards(copy)
        for name in TABLES:
            (run / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copy / name, run / name)
    return [*records, *(run / name for name in (*TABLES, "run-config.toml", "README.md"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the published run's folder, results/<date>-<budget>")
    parser.add_argument("--commit", action="store_true", help="git add and commit the snapshot")
    arguments = parser.parse_args()
    paths = snapshot(arguments.run)
    records = sum(path.name in ("result.json", "error.json") for path in paths)
    print(f"{arguments.run}: {records} records, boards rebuilt from them")
    if arguments.commit:
        subprocess.run(["git", "add", "--", *map(str, paths)], check=True)
        message = f"{arguments.run.name}: {records} records so far, and the boards they rebuild"
        subprocess.run(["git", "commit", "-q", "-m", message, "--", *map(str, paths)], check=True)


if __name__ == "__main__":
    main()
