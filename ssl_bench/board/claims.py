"""Claims that one variant beats another: each cell against scratch and its column's best, training seeds as the
replicates (:func:`ssl_bench.stats.seed_comparison`), Holm over each variant's own columns of a table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ssl_bench.board.schema import BOARD_Q_VS_SCRATCH, COMPARISON_COLUMNS, RUN_KEYS, TIE_DECIMALS
from ssl_bench.stats import MIN_SEEDS, SeedComparison, benjamini_hochberg, holm, seed_comparison

#: A claim counts at this Holm-adjusted p-value.
SIGNIFICANCE = 0.05
#: What a comparison with scratch or the column's best can say (the ``claim_vs_*`` columns).
BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"
TOO_FEW_SEEDS, UNTESTABLE = "too few seeds", "untestable"
#: How a claim is made, said in every table that marks claims.
CLAIM_RULE = (
    "training seeds are the replicates, not test images (the paired t-test on the per-seed scores where the two "
    "variants' seeds drew the same random numbers, Welch's t-test where they did not; a single encoder that every "
    "seed loaded, e.g. a checkpoint, counts as one draw against the other side's spread), p < "
    f"{SIGNIFICANCE} after Holm's correction over the variant's own columns of the protocol's table, so adding a "
    f"variant changes no other variant's ▲/▼. A claim needs {MIN_SEEDS} seeds per variant."
)


def with_claims(summary: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """Each cell against ``scratch`` and against its column's best, with training seeds as the replicates
    (:func:`ssl_bench.stats.seed_comparison`, paired where both cells ran on the same seeds): the difference of
    means with its 95% interval, the p-value Holm-adjusted over the variant's own columns of each (protocol, metric)
    table, the claim it supports and the test that gave it; and against scratch the board-wide q-value
    (:func:`_board_q_values`)."""
    cells = {key: group for key, group in seeds.groupby(RUN_KEYS, sort=False)}
    summary = summary.copy()
    for reference, references in (("scratch", _scratch_references(summary)), ("best", _best_references(summary))):
        columns = COMPARISON_COLUMNS[reference]
        found = {index: _compare(cells, summary.loc[index], summary.loc[other]) for index, other in references.items()}
        for column, field in ((columns.difference, "difference"), (columns.low, "ci_low"), (columns.high, "ci_high")):
            summary[column] = [getattr(found.get(i), field, math.nan) for i in summary.index]
        summary[columns.test] = [getattr(found.get(i), "test", "") for i in summary.index]
        tested = {i: c.p_value for i, c in found.items() if c is not None and not math.isnan(c.p_value)}
        if reference == "scratch":
            summary[BOARD_Q_VS_SCRATCH] = _board_q_values(summary, tested)
        summary[columns.p_value] = math.nan
        for _, family in summary.loc[list(tested)].groupby(["variant", "protocol", "metric"]) if tested else []:
            summary.loc[family.index, columns.p_value] = holm([tested[i] for i in family.index])
        summary[columns.claim] = [
            _claim(found[i], summary.at[i, columns.p_value], summary.at[i, "higher_is_better"]) if i in found else ""
            for i in summary.index
        ]
    return summary


def _compare(cells: dict[tuple, pd.DataFrame], row: pd.Series, reference: pd.Series) -> SeedComparison | None:
    """``row``'s cell against ``reference``'s over their seeds, paired where both sides ran on the same seeds;
    None where the seeds cannot support a claim."""
    mine, theirs = cells[tuple(row[RUN_KEYS])], cells[tuple(reference[RUN_KEYS])]
    paired = _same_seeds(mine, theirs)
    if paired:  # line the pairs up
        mine, theirs = mine.sort_values("seed"), theirs.sort_values("seed")
    return seed_comparison(
        mine["score"].to_numpy(dtype=float),
        theirs["score"].to_numpy(dtype=float),
        paired=paired,
        a_single_encoder=bool(row["single_encoder"]),
        b_single_encoder=bool(reference["single_encoder"]),
    )


def _same_seeds(mine: pd.DataFrame, theirs: pd.DataFrame) -> bool:
    """Whether every seed of one cell drew the same random numbers as one of the other's (common random numbers),
    and no other: then seed ``i`` of both is a pair."""
    seeds = set(mine["seed"])
    return len(seeds) == len(mine) == len(theirs) and seeds == set(theirs["seed"])


def _board_q_values(summary: pd.DataFrame, p_values: dict[int, float]) -> list[float]:
    """Benjamini-Hochberg q over every tested headline comparison with scratch on the board (``p_values``: row index
    -> its p), whatever its protocol: how far a claim holds up among all the board's comparisons, where Holm counts
    only the variant's own columns of one protocol. NaN for other metrics and untested cells."""
    family = [index for index in p_values if summary.at[index, "headline"]]
    q = dict(zip(family, benjamini_hochberg([p_values[index] for index in family]), strict=True))
    return [q.get(index, math.nan) for index in summary.index]


def _claim(comparison: SeedComparison | None, adjusted_p: float, higher_is_better: bool) -> str:
    if comparison is None:
        return TOO_FEW_SEEDS
    if math.isnan(adjusted_p):
        return UNTESTABLE
    if adjusted_p >= SIGNIFICANCE:
        return NOT_DISTINGUISHABLE
    return BETTER if (comparison.difference > 0) == bool(higher_is_better) else WORSE


def _scratch_references(summary: pd.DataFrame) -> dict[int, int]:
    """Row index -> the row of ``scratch`` with the same task, protocol, fraction, metric, budget and encoder
    (none where there are several scratch variants to choose from)."""
    compared_on = ["task", "protocol", "label_fraction", "metric", "budget", "encoder"]
    scratch = summary[summary["method"] == "scratch"]
    references = {key: rows.index[0] for key, rows in scratch.groupby(compared_on, sort=False) if len(rows) == 1}
    return {
        index: references[key]
        for index, row in summary.iterrows()
        if row["method"] != "scratch" and (key := tuple(row[compared_on])) in references
    }


def _best_references(summary: pd.DataFrame) -> dict[int, int]:
    """Row index -> the row of its table column's best mean (same task, protocol, fraction and metric)."""
    references = {}
    for _, column in summary.groupby(["task", "protocol", "label_fraction", "metric"], sort=False):
        signed = np.where(column["higher_is_better"].astype(bool), column["mean"], -column["mean"])
        if np.isnan(signed).all():
            continue
        best = column.index[int(np.nanargmax(np.round(signed, TIE_DECIMALS)))]
        references |= {index: best for index in column.index if index != best}
    return references
