"""The leaderboard as Markdown (``leaderboard.md``): the same sections as the HTML report, and a footnote."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ssl_bench.board.schema import Cell, Table, seed_range
from ssl_bench.board.sections import demo_banner, leaderboard_sections, run_line

if TYPE_CHECKING:
    from ssl_bench.board.load import Board


def render_markdown(board: Board) -> str:
    """The leaderboard as Markdown: findings, one table per protocol, failed jobs, a compute table and a footnote."""
    lines = ["# ssl-bench leaderboard", ""]
    if banner := demo_banner(board.records):
        lines += [banner, ""]
    if budgets := run_line(board.records):
        lines += [budgets, ""]
    if board.problems:
        problems = board.problems
        lines += [f"{len(problems)} result file(s) left out:", "", *(f"- {problem}" for problem in problems), ""]
    summary = board.summary
    if summary.empty:
        return "\n".join([*lines, "No results yet.", ""])
    for section in leaderboard_sections(board):
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            lines += [block, ""] if isinstance(block, str) else [block.caption, "", *_markdown_table(block), ""]
    lines += _footnote(summary)
    return "\n".join(lines)


def _markdown_table(table: Table) -> list[str]:
    def text(cell: Cell) -> str:
        shown = f"**{cell.text}**" if cell.bold else cell.text
        return (shown + cell.marks).replace("|", "\\|")

    separator = ["---", *(["---:"] * (len(table.header) - 1))]
    body = [[text(cell) for cell in row] for row in table.rows]
    return ["| " + " | ".join(cells) + " |" for cells in [table.header, separator, *body]]


def _footnote(summary: pd.DataFrame) -> list[str]:
    seeds = seed_range(summary)
    seeds += " seed" if seeds == "1" else " seeds"
    return [
        "---",
        "",
        f"Statistics. Each cell summarises {seeds}: the score of a seed is its mean over the test "
        "images; cells show the mean over seeds ± their std (ddof=1), or the mean alone for one "
        "seed. `leaderboard.csv` adds n_seeds, a t-based 95% CI over seeds (mean ± t(0.975, n−1)·std/√n), "
        "a 95% bootstrap interval over test images stratified by seed (image_low, image_high: how precisely the test "
        "set measures these trained models, not how another run would score), the seed-level comparisons against "
        "scratch and the column's best (difference of means, its 95% CI, Holm-adjusted p, claim, and the test: "
        "paired, welch or prediction), "
        "and image_std, the std over test "
        "images (ddof=0, as in LD-style tables) averaged over seeds. Mean rank and wins count only the "
        "columns (task, label fraction) that every variant in the table completed; rank 1 is best and "
        "ties share the average rank.",
        "",
    ]
