"""The columns of the board's tables and the cells they are laid out in: shared by every module of the board."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

#: The ``metric`` name under which tables show each protocol's own headline metric (Dice for segmentation,
#: AUC for classification, or what a protocol plugin declares).
HEADLINE_METRIC = "headline"
#: Protocols shown in this order (LD's two phases first); others follow alphabetically.
PROTOCOL_ORDER = ("frozen", "finetune", "linear-probe", "linear-seg", "clustering")


COMPUTE_COLUMNS = ("pretrain_seconds", "protocol_seconds", "pretrain_images_per_second", "peak_memory_mb")


RUN_KEYS = ["variant", "task", "protocol", "label_fraction", "metric"]


SEED_COLUMNS = [
    "variant",
    "headline",
    "higher_is_better",
    "method",
    "task",
    "protocol",
    "label_fraction",
    "metric",
    "seed_index",
    "seed",
    "score",
    "image_std",
    "n_images",
    *COMPUTE_COLUMNS,
    "device",
    "budget",
    "pool",
    "random_encoder",
    "encoder",
    "unix_time",
    "job_id",
    "encoder_digest",
    "images",
]


#: Benjamini-Hochberg q over every headline comparison with scratch on the board.
BOARD_Q_VS_SCRATCH = "q_vs_scratch"

SUMMARY_COLUMNS = [
    "variant",
    "headline",
    "higher_is_better",
    "method",
    "task",
    "protocol",
    "label_fraction",
    "metric",
    "n_seeds",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "image_std",
    "n_images",
    *COMPUTE_COLUMNS,
    "device",
    "budget",
    "pool",
    "random_encoder",
    "encoder",
    "n_failed",
    "single_encoder",
    "image_low",
    "image_high",
    "diff_vs_scratch",
    "diff_low",
    "diff_high",
    "p_vs_scratch",
    "claim_vs_scratch",
    "test_vs_scratch",
    BOARD_Q_VS_SCRATCH,
    "diff_vs_best",
    "best_diff_low",
    "best_diff_high",
    "p_vs_best",
    "claim_vs_best",
    "test_vs_best",
]


@dataclass(frozen=True)
class ComparisonColumns:
    """The summary's columns for one reference a cell is compared with: the difference of means, its 95% interval,
    the Holm-adjusted p-value, the claim, and the test that gave them (``paired``, ``welch`` or ``prediction``)."""

    difference: str
    low: str
    high: str
    p_value: str
    claim: str
    test: str


COMPARISON_COLUMNS = {
    "scratch": ComparisonColumns(
        "diff_vs_scratch", "diff_low", "diff_high", "p_vs_scratch", "claim_vs_scratch", "test_vs_scratch"
    ),
    "best": ComparisonColumns(
        "diff_vs_best", "best_diff_low", "best_diff_high", "p_vs_best", "claim_vs_best", "test_vs_best"
    ),
}


RANK_COLUMNS = ["variant", "mean_rank", "wins", "n_columns"]
# Means of the same scores summed in another order can differ in the last bits; compare rounded
# values so that such means still count as ties.
TIE_DECIMALS = 12


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the number it sorts by, whether it is its column's best, marks after the text and
    a detail line (intervals, p-values) that the HTML report shows under it."""

    text: str
    value: float | None = None
    bold: bool = False
    marks: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Table:
    caption: str
    header: list[str]
    rows: list[list[Cell]]


@dataclass(frozen=True)
class Section:
    """A headed part of the leaderboard: paragraphs (inline Markdown: `code`, **bold**) and tables, in order.
    ``protocol`` names the protocol whose headline results the section holds, if any."""

    title: str
    blocks: list[str | Table]
    level: int = 2
    protocol: str | None = None


def format_number(value: float, decimals: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def seed_range(rows: pd.DataFrame) -> str:
    low, high = int(rows["n_seeds"].min()), int(rows["n_seeds"].max())
    return str(low) if low == high else f"{low} to {high}"
