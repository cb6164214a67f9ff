"""What a run leaves to read, written from one :class:`Board`: ``leaderboard.csv``/``.md``/``.png`` and the
self-contained ``report/index.html``."""

from __future__ import annotations

from pathlib import Path

from ssl_bench.board.html import render_html
from ssl_bench.board.load import Board
from ssl_bench.board.markdown import render_markdown
from ssl_bench.board.plots import dot_plot
from ssl_bench.board.sections import demo_banner
from ssl_bench.results import write_atomic, write_text

REPORT_PAGE = Path("report") / "index.html"


def write_leaderboard(board: Board) -> tuple[Path, Path, Path]:
    """Write ``leaderboard.csv``, ``.md`` and ``.png`` under the board's results folder; return their paths."""
    csv_path, md_path, png_path = (board.results_dir / f"leaderboard.{suffix}" for suffix in ("csv", "md", "png"))
    write_atomic(csv_path, lambda f: f.write(board.summary.to_csv(index=False).encode("utf-8")))
    write_text(md_path, render_markdown(board))
    figure = dot_plot(board.summary, demo=demo_banner(board.records) is not None)
    write_atomic(png_path, lambda f: figure.savefig(f, format="png", dpi=120))
    return csv_path, md_path, png_path


def write_report(board: Board) -> Path:
    """Write ``report/index.html`` under the board's results folder; return its path."""
    config = board.results_dir / "run-config.toml"
    run_config = config.read_text(encoding="utf-8") if config.exists() else None
    return write_text(board.results_dir / REPORT_PAGE, render_html(board, run_config))


def write_boards(results_dir: Path) -> tuple[Path, ...]:
    """The leaderboards and the report of ``results_dir``, its records read once; their paths."""
    board = Board.load(results_dir)
    return (*write_leaderboard(board), write_report(board))
