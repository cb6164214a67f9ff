"""Every published run in results/ rebuilds from its committed records alone, byte for byte, and this code still
plans every job those records hold (a change that renamed them would orphan the run: it could not be continued)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA, shared_data

from ssl_bench.board import Board, write_leaderboard
from ssl_bench.config import read_config_file, resolve_config
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry

RESULTS = REPO / "results"
#: A published run is a folder of results/ with its leaderboard; what it was built from is committed beside it.
PUBLISHED = sorted(folder for folder in RESULTS.iterdir() if (folder / "leaderboard.md").is_file())
#: The tables; the PNG is left out, its bytes depend on the font rasteriser of the machine that draws it.
REBUILT = ("leaderboard.md", "leaderboard.csv")


def committed_records(published: Path) -> list[Path]:
    return sorted([*published.glob("runs/*/result.json"), *published.glob("runs/*/error.json")])


def test_results_holds_a_published_run() -> None:
    assert PUBLISHED, f"no published run in {RESULTS} (a folder with leaderboard.md and runs/*/result.json)"


@pytest.mark.parametrize("published", PUBLISHED, ids=[folder.name for folder in PUBLISHED])
def test_a_published_leaderboard_rebuilds_byte_for_byte_from_its_records(published: Path, tmp_path: Path) -> None:
    records = committed_records(published)
    assert records, f"{published} holds no runs/*/result.json"
    for record in records:
        copy = tmp_path / record.relative_to(published)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record, copy)
    write_leaderboard(Board.load(tmp_path))
    for name in REBUILT:
        assert (tmp_path / name).read_bytes() == (published / name).read_bytes(), f"{published / name} differs"


@pytest.mark.parametrize("published", PUBLISHED, ids=[folder.name for folder in PUBLISHED])
def test_this_code_plans_every_job_a_published_run_recorded(published: Path, tmp_path: Path) -> None:
    for folder in ("CXR_lungs_512", "DRIVE", "CHASE_DB1", "MedMNIST"):
        shared_data(folder)
    registry = get_registry()
    file_values = read_config_file(published / "run-config.toml")
    config = resolve_config(file_values, {"data_root": str(SHARED_DATA), "results": str(tmp_path)}, registry)
    planned = {job.id for job in build_plan(config, registry, echo=lambda line: None).jobs}
    recorded = {record.parent.name for record in committed_records(published)}
    assert recorded <= planned, (
        f"{len(recorded - planned)} recorded jobs are no longer planned, e.g. {min(recorded - planned)}"
    )
