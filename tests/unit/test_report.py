"""The HTML report: one self-contained page, checked as HTML here and in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from records import record, write_runs
from typer.testing import CliRunner

from ssl_bench.board import Board, write_leaderboard, write_report
from ssl_bench.board import load as board_load
from ssl_bench.board.plots import critical_difference_groups, variant_styles
from ssl_bench.cli import app

TASKS = ("t1", "t2", "t3", "t4", "t5")
VARIANTS = {"scratch": 0.5, "simclr": 0.6, "ld": 0.7}


def _scores(base: float, task: int, seed: int) -> list[float]:
    rng = np.random.default_rng(100 * task + seed)
    return list(np.clip(base + 0.02 * task + rng.normal(0, 0.03, 10), 0, 1))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Three variants on five tasks (enough for the critical-difference diagram), two seeds, and t1 also at
    label fraction 0.25 (for the label-fraction curves)."""
    records = [
        record(f"{v}-{t}-{s}-{f}", v, task=t, seed_index=s, fraction=f, scores=_scores(base - (1 - f) / 4, i, s))
        for v, base in VARIANTS.items()
        for i, t in enumerate(TASKS)
        for s in (0, 1)
        for f in ((1.0, 0.25) if t == "t1" else (1.0,))
    ]
    write_runs(tmp_path, records)
    (tmp_path / "run-config.toml").write_text('budget = "paper"\nseeds = 2\n')
    return tmp_path


def test_the_report_is_one_file_that_fetches_nothing(results: Path) -> None:
    page = write_report(Board.load(results)).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # no CDN, no remote image
    assert "<link" not in page and "<script src" not in page
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert images == ["dot plot of frozen", "critical-difference diagram of frozen", "label-fraction curves"]
    for anchor in ("manifest", "frozen", "compute", "label-fraction-curves", "jobs"):
        assert f'id="{anchor}"' in page
    assert "budget = &quot;paper&quot;" in page  # the run configuration, escaped
    assert "36 done, 0 failed" in page


def test_every_job_links_to_its_result_file(results: Path) -> None:
    path = write_report(Board.load(results))
    links = re.findall(r'<a href="([^"]+/result\.json)">', path.read_text(encoding="utf-8"))
    assert len(links) == 36  # 3 variants x (5 tasks + t1 at 0.25) x 2 seeds
    assert all((path.parent / link).resolve().is_file() for link in links)


def test_each_variant_keeps_one_style_whatever_the_order() -> None:
    names = [f"method{i}" for i in range(15)] + ["ld", "scratch"]
    styles = variant_styles(names)
    assert variant_styles(reversed(names)) == styles
    assert len({style.colour for style in styles.values()}) == len(names)  # 17 of tab20's 20 colours
    assert styles["ld"].colour != styles["scratch"].colour


def test_critical_difference_groups_on_hand_ranks() -> None:
    # CD 1.0: 1.0 and 1.5 lie within it, 3.0 and 3.2 too, 1.5 and 3.0 do not.
    assert critical_difference_groups(np.array([1.0, 1.5, 3.0, 3.2]), 1.0) == [(0, 1), (2, 3)]
    # CD 2.5: 1.0 reaches 3.2; the group starting at 1.5 lies inside it and is not drawn again.
    assert critical_difference_groups(np.array([1.0, 1.5, 3.0, 3.2]), 2.5) == [(0, 3)]
    assert critical_difference_groups(np.array([1.0, 2.0, 3.0]), 0.5) == []


# --- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; skips where either is absent, fails under CI=true."""
    executable = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        reason = "needs Debian's chromium and the playwright package (.ci/run installs both)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=[*flags, "--disable-sync"])
        yield chromium
        chromium.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors


def _headline_table(page) -> list[list[str]]:
    """The rows of the frozen protocol's headline table: variant, then each cell's data-value."""
    return page.evaluate(
        """() => [...document.querySelector('table[data-name="frozen"] tbody').rows].map(
            (row) => [row.cells[0].textContent, ...[...row.cells].slice(1, -2).map((c) => c.dataset.value)])"""
    )


def test_the_page_loads_cleanly_shows_the_csv_numbers_sorts_and_renders_every_image(
    browser, results: Path, tmp_path_factory
) -> None:
    csv_path = write_leaderboard(Board.load(results))[0]
    page, errors = _open(browser, write_report(Board.load(results)))
    header = page.evaluate("""[...document.querySelectorAll('table[data-name="frozen"] thead th')].map(
        (th) => th.textContent)""")
    columns = header[1:-2]
    assert columns == ["t1", "t1@0.25", "t2", "t3", "t4", "t5"]
    summary = pd.read_csv(csv_path)
    dice = summary[(summary["metric"] == "dice") & (summary["protocol"] == "frozen")]
    expected = {
        (r.variant, r.task if r.label_fraction == 1 else f"{r.task}@{r.label_fraction:g}"): r.mean
        for r in dice.itertuples()
    }
    shown = _headline_table(page)
    assert {row[0] for row in shown} == set(VARIANTS)
    for variant, *values in shown:
        for column, value in zip(columns, values, strict=True):
            assert float(value) == pytest.approx(expected[(variant, column)], abs=1e-12)

    t2 = header.index("t2")  # its place in a row, and nth-child counts from 1
    page.click(f'table[data-name="frozen"] thead th:nth-child({t2 + 1})')  # ascending
    ascending = [float(row[t2]) for row in _headline_table(page)]
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    page.click(f'table[data-name="frozen"] thead th:nth-child({t2 + 1})')  # again: descending
    assert [float(row[t2]) for row in _headline_table(page)] == sorted(ascending, reverse=True)
    page.click('table[data-name="frozen"] thead th:nth-child(1)')  # by name
    assert [row[0] for row in _headline_table(page)] == sorted(VARIANTS)

    sizes = page.evaluate("[...document.images].map((image) => [image.complete, image.naturalWidth])")
    assert len(sizes) == 3 and all(complete and width > 0 for complete, width in sizes)
    assert errors == []
    page.screenshot(path=str(results / "report" / "screenshot.png"), full_page=True)
    page.close()


def test_the_report_command_writes_the_page_and_says_what_to_do_without_results(results: Path, tmp_path) -> None:
    done = CliRunner().invoke(app, ["report", "--results", str(results)])
    assert done.exit_code == 0, done.output
    assert f"wrote {results / 'report' / 'index.html'}" in done.output
    assert (results / "leaderboard.csv").is_file()
    empty = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "no finished jobs" in empty.output and "run the benchmark first" in empty.output


def test_the_report_command_reads_each_result_file_once_and_builds_each_table_once(tmp_path: Path, monkeypatch):
    records = [
        record(f"{v}-{t}-{s}", v, task=t, seed_index=s, scores=_scores(base, i, s))
        for v, base in {**VARIANTS, "byol": 0.55}.items()
        for i, t in enumerate(("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10"))
        for s in range(5)
    ]
    write_runs(tmp_path, records)
    reads: list[Path] = []
    tables: list[str] = []
    real_read, real_seed_table = board_load.read_record, board_load.seed_table
    monkeypatch.setattr(board_load, "read_record", lambda path: reads.append(path) or real_read(path))
    monkeypatch.setattr(board_load, "seed_table", lambda *a: tables.append("seeds") or real_seed_table(*a))
    done = CliRunner().invoke(app, ["report", "--results", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert len(reads) == len(set(reads)) == 200
    assert tables == ["seeds"]
