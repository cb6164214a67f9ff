"""The board laid out as :class:`Section` s of :class:`Table` s, which the Markdown leaderboard and the HTML report
both render: findings, per protocol its tables (scores with claim marks, the aggregate over columns, pairwise
chances), failed jobs and compute."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ssl_bench.board.claims import BETTER, CLAIM_RULE, NOT_DISTINGUISHABLE, TOO_FEW_SEEDS, UNTESTABLE, WORSE
from ssl_bench.board.findings import findings_section
from ssl_bench.board.schema import (
    COMPARISON_COLUMNS,
    HEADLINE_METRIC,
    TIE_DECIMALS,
    Cell,
    Section,
    Table,
    format_number,
)
from ssl_bench.board.tables import (
    column_label,
    friedman_result,
    metrics_of,
    protocols_of,
    ranks,
    rows_of,
    score_board,
    task_columns,
)
from ssl_bench.models import VGG16_BN_TINY
from ssl_bench.record import FailureRecord, ResultRecord
from ssl_bench.stats import (
    MIN_COLUMNS,
    MIN_SEEDS,
    iqm_interval,
    iqm_normalised,
    probability_of_improvement,
    probability_of_improvement_interval,
)

if TYPE_CHECKING:
    from ssl_bench.board.load import Board

_DEMO_BANNER = (
    "> **Smoke test, not a benchmark.** These results were made with the `demo` budget "
    "(tiny schedules{data}). They show that the pipeline runs end to end; "
    "they are not evidence for comparing methods."
)


def leaderboard_sections(board: Board) -> list[Section]:
    """The leaderboard's sections: what it found, per protocol its tables, then failed jobs and compute."""
    summary = board.summary
    sections = [findings_section(summary)]
    for protocol in protocols_of(summary):
        sections += _protocol_sections(summary[summary["protocol"] == protocol], board.seeds, protocol)
    if board.failures:
        sections.append(_failures_section(board.failures))
    return [*sections, _compute_section(summary)]


def run_line(results: list[ResultRecord]) -> str | None:
    """The budget(s) the results were made with, and the encoders where rows have several, as one Markdown
    sentence; None without results."""
    budgets = sorted({result.budget for result in results})
    if not budgets:
        return None
    line = f"Budget{'s' if len(budgets) > 1 else ''}: {', '.join(f'`{name}`' for name in budgets)}."
    encoders = sorted({result.encoder for result in results}, key=lambda name: (name != VGG16_BN_TINY, name))
    if len(encoders) > 1:
        named = [f"`{name}` (rows named `@{name}`)" for name in encoders if name != VGG16_BN_TINY]
        default = [f"`{VGG16_BN_TINY}` (the others)"] if VGG16_BN_TINY in encoders else []
        line += f" Encoders: {', '.join(named + default)}; each row is compared with the scratch of its encoder."
    return line


def demo_banner(results: list[ResultRecord]) -> str | None:
    """The warning that results of the demo budget (or one based on it) are a smoke test, if any result is one."""
    if not any(result.budget.partition("(")[0] == "demo" for result in results):
        return None
    synthetic = all(result.task_modality.startswith("synthetic") for result in results)
    return _DEMO_BANNER.format(data=", synthetic data" if synthetic else "")


def _protocol_sections(rows: pd.DataFrame, seeds: pd.DataFrame, protocol: str) -> list[Section]:
    blocks: list[str | Table] = []
    random = sorted(set(rows.loc[rows["random_encoder"].astype(bool), "variant"]))
    if random:
        blocks.append(
            f"{', '.join(f'`{v}`' for v in random)}: no pretraining, so here a frozen random encoder "
            "(a baseline of what the head alone learns, not a pretraining result)."
        )
    order = ranks(rows, HEADLINE_METRIC)
    blocks += [_friedman_line(rows), _metric_table(rows_of(rows, HEADLINE_METRIC), order, with_ranks=True)]
    blocks += [table] if (table := _aggregate_table(rows, seeds, order)) else []
    blocks += [table] if (table := _pairwise_table(rows, seeds, order)) else []
    sections = [Section(f"`{protocol}`", blocks, protocol=protocol)]
    for metric in metrics_of(rows)[1:]:
        table = _metric_table(rows_of(rows, metric), order, with_ranks=False)
        sections.append(Section(f"`{protocol}`: {metric}", [table], level=3))
    return sections


def _friedman_line(rows: pd.DataFrame) -> str:
    """The Friedman test and Nemenyi critical difference over the columns every variant completed."""
    found = friedman_result(rows)
    if found is None:
        return "Friedman test: needs two variants with a common completed column."
    result = found[1]
    if not result.informative:
        return (
            f"Friedman test over {result.n_tasks} column(s) of {result.n_methods} variants: not informative below "
            f"{MIN_COLUMNS} columns, so not reported."
        )
    return (
        f"Friedman test over {result.n_tasks} columns of {result.n_methods} variants: chi-square "
        f"{result.statistic:.2f}, p = {result.p_value:.3g}; Nemenyi critical difference "
        f"{result.critical_difference:.2f} (mean ranks further apart than this differ at p < 0.05)."
    )


def _metric_table(rows: pd.DataFrame, order: pd.DataFrame, with_ranks: bool) -> Table:
    columns = task_columns(rows)
    by_key = {(r.variant, r.task, r.label_fraction): r for r in rows.itertuples(index=False)}
    best = {col: _best_mean(rows, *col) for col in columns}
    most_seeds = int(rows["n_seeds"].max()) if len(rows) else 0
    claims = set(rows["claim_vs_scratch"]) | set(rows["claim_vs_best"])
    few_everywhere = TOO_FEW_SEEDS in claims and not claims & {BETTER, WORSE, NOT_DISTINGUISHABLE, UNTESTABLE}
    header = ["variant", *(column_label(*col) for col in columns)]
    header += ["mean rank", "wins"] if with_ranks else []
    ranked = order.set_index("variant")
    body = []
    for variant in _ordered_variants(order, rows["variant"]):
        cells = [Cell(variant)]
        cells += [_score_cell(by_key.get((variant, *col)), best[col], most_seeds, few_everywhere) for col in columns]
        if with_ranks and variant in ranked.index:
            rank = ranked.at[variant, "mean_rank"]
            cells += [Cell(format_number(rank, 2), rank), Cell(str(ranked.at[variant, "wins"]))]
        elif with_ranks:
            cells += [Cell(""), Cell("")]
        body.append(cells)
    return Table(_caption(rows, most_seeds, few_everywhere), header, body)


def _caption(rows: pd.DataFrame, most_seeds: int, few_everywhere: bool) -> str:
    directions = {
        f"{metric} ({'higher' if higher else 'lower'} is better)"
        for metric, higher in zip(rows["metric"], rows["higher_is_better"].astype(bool), strict=True)
    }
    shown = "mean ± std over seeds" if most_seeds >= 2 else "one seed per cell: its mean over the test images"
    caption = (
        f"{'; '.join(sorted(directions))}: {shown}, best in bold. ▲/▼ better/worse than scratch, ≈ not "
        f"distinguishable from the column's best: {CLAIM_RULE}"
    )
    if few_everywhere:
        caption += (
            f" **Too few seeds to claim:** at most {most_seeds} seed(s) per cell here, so no cell is marked "
            f"(rerun with `--seeds {MIN_SEEDS}` or more)."
        )
    return caption


def _ordered_variants(order: pd.DataFrame, present: Iterable[str]) -> list[str]:
    ranked = [variant for variant in order["variant"] if variant in set(present)]
    return ranked + sorted(set(present) - set(ranked))


def _best_mean(rows: pd.DataFrame, task: str, fraction: float) -> float:
    column = rows[(rows["task"] == task) & (rows["label_fraction"] == fraction)]
    means = column["mean"].round(TIE_DECIMALS)
    return float(means.max() if column["higher_is_better"].astype(bool).all() else means.min())


def _score_cell(row: Any, best: float, most_seeds: int, few_everywhere: bool) -> Cell:
    """Mean (± std over seeds) with its marks; a cell with fewer seeds than the table's others says how many."""
    if row is not None and row.n_seeds == 0 and row.n_failed:
        return Cell("failed")
    if row is None or math.isnan(row.mean):
        return Cell("–")
    text = f"{row.mean:.3f}" if row.n_seeds < 2 else f"{row.mean:.3f} ± {row.std:.3f}"
    marks = {BETTER: " ▲", WORSE: " ▼"}.get(row.claim_vs_scratch, "")
    bold = round(row.mean, TIE_DECIMALS) == best
    if row.claim_vs_best == NOT_DISTINGUISHABLE and not bold:
        marks += " ≈"
    # Only the side short of seeds is marked: a cell compared with a best of 2 seeds can still be claimed against
    # scratch.
    own_too_few = row.n_seeds < MIN_SEEDS and not row.single_encoder
    if own_too_few and TOO_FEW_SEEDS in (row.claim_vs_scratch, row.claim_vs_best) and not few_everywhere:
        marks += " (too few seeds to claim)"
    if row.n_failed:
        marks += f" ({row.n_failed} of {row.n_seeds + row.n_failed} seeds failed)"
    elif row.n_seeds < most_seeds:
        marks += f" ({row.n_seeds} of {most_seeds} seeds)"
    return Cell(text, row.mean, bold, marks, "; ".join(_cell_details(row)))


def _cell_details(row: Any) -> list[str]:
    """The cell's intervals and comparisons, for the line under it in the HTML report."""
    details = [f"seeds 95% CI [{row.ci95_low:.3f}, {row.ci95_high:.3f}]"] if not math.isnan(row.ci95_low) else []
    if not math.isnan(row.image_low):
        details.append(f"test-image interval of these trained models [{row.image_low:.3f}, {row.image_high:.3f}]")
    for reference, columns in COMPARISON_COLUMNS.items():
        found = getattr(row, columns.claim)
        if found in (TOO_FEW_SEEDS, UNTESTABLE):
            details.append(f"vs {reference}: {found}")
        elif found:
            low, high = getattr(row, columns.low), getattr(row, columns.high)
            details.append(
                f"vs {reference} {getattr(row, columns.difference):+.3f} [{low:+.3f}, {high:+.3f}],"
                f" p {getattr(row, columns.p_value):.2g} ({getattr(row, columns.test)})"
            )
    return details


def _aggregate_table(rows: pd.DataFrame, seeds: pd.DataFrame, order: pd.DataFrame) -> Table | None:
    """Per variant over the columns every variant completed: the IQM of scratch-normalised headline scores
    (no one easy task dominates it) and the probability of beating scratch on a random column, each with its 95%
    interval over training seeds; each variant against the scratch of its encoder."""
    headline = rows_of(rows, HEADLINE_METRIC)
    board = score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
    bounded = headline["higher_is_better"].astype(bool).all() and headline["mean"].between(0, 1).all()
    if board.empty or not bounded:
        return None
    references = _scratch_of_each_encoder(headline, board)
    body = []
    for variant in _ordered_variants(order, board.index):
        reference = references.get(variant)
        if reference is None:
            continue
        variant_seeds, reference_seeds = (_seed_scores(seeds, name, board.columns) for name in (variant, reference))
        iqm = iqm_normalised(board.loc[variant].to_numpy(), board.loc[reference].to_numpy())
        improvement = probability_of_improvement(variant_seeds, reference_seeds)
        body.append(
            [
                Cell(variant),
                Cell(f"{iqm:.3f}", iqm),
                _interval_cell(iqm_interval(variant_seeds, reference_seeds)),
                Cell(f"{improvement:.2f}", improvement),
                _interval_cell(probability_of_improvement_interval(variant_seeds, reference_seeds), decimals=2),
            ]
        )
    if not body:
        return None
    several = len(set(references.values())) > 1
    caption = (
        f"Over the {board.shape[1]} column(s) every variant completed: the interquartile mean of "
        "(score - scratch) / (1 - scratch) (0: no better than scratch, 1: perfect), and the chance that a run of the "
        "variant beats a run of scratch on a random column (ties count half)"
        + ("; each row against the scratch of its encoder. " if several else ". ")
        + "95% intervals: the IQM's a bootstrap that redraws the training seeds within each column, the chance's a "
        "score interval (Newcombe's method 5); blank where a column has a single seed."
    )
    header = ["variant", "IQM vs scratch", "IQM 95% interval", "P(beats scratch)", "P 95% interval"]
    return Table(caption, header, body)


def _scratch_of_each_encoder(headline: pd.DataFrame, board: pd.DataFrame) -> dict[str, str]:
    """Variant -> the scratch variant of its encoder, where that encoder has exactly one, below 1 in every column
    (a perfect scratch leaves nothing to normalise by)."""
    encoders = headline.groupby("variant")["encoder"].first()
    methods = headline.groupby("variant")["method"].agg(set)
    scratches: dict[str, list[str]] = {}
    for variant in board.index:
        if methods[variant] == {"scratch"}:
            scratches.setdefault(encoders[variant], []).append(variant)
    usable = {
        encoder: names[0] for encoder, names in scratches.items() if len(names) == 1 and (board.loc[names[0]] < 1).all()
    }
    return {
        variant: usable[encoders[variant]]
        for variant in board.index
        if encoders[variant] in usable and usable[encoders[variant]] != variant
    }


def _interval_cell(interval: tuple[float, float], decimals: int = 3) -> Cell:
    low, high = interval
    if math.isnan(low):
        return Cell("")
    return Cell(f"[{low:.{decimals}f}, {high:.{decimals}f}]", low)


def _pairwise_table(rows: pd.DataFrame, seeds: pd.DataFrame, order: pd.DataFrame) -> Table | None:
    """P(a run of the row's variant beats one of the column's on a random column), where there are at least
    :data:`MIN_COLUMNS` columns every variant completed and three variants: fewer columns give chances of 0, 0.5
    and 1 that say nothing, and two variants are the aggregate table already."""
    board = score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
    if board.shape[0] < 3 or board.shape[1] < MIN_COLUMNS:
        return None
    variants = _ordered_variants(order, board.index)
    signed = {variant: _seed_scores(seeds, variant, board.columns, signed=True) for variant in variants}
    body = []
    for a in variants:
        chances = [probability_of_improvement(signed[a], signed[b]) if a != b else math.nan for b in variants]
        body.append([Cell(a), *(Cell("" if math.isnan(p) else f"{p:.2f}", p) for p in chances)])
    caption = (
        f"The chance that a run of the row's variant beats a run of the column's on a random one of the "
        f"{board.shape[1]} columns every variant completed (ties count half)."
    )
    return Table(caption, ["beats →", *variants], body)


def _seed_scores(seeds: pd.DataFrame, variant: str, columns: pd.Index, signed: bool = False) -> list[np.ndarray]:
    """The variant's per-seed headline scores in each (task, protocol, label_fraction) column, negated for a
    lower-is-better metric if ``signed``."""
    headline = seeds[seeds["headline"].astype(bool) & (seeds["variant"] == variant)]
    by_column = headline.groupby(["task", "protocol", "label_fraction"])
    found = []
    for column in columns:
        cell = by_column.get_group(column)
        scores = cell["score"].to_numpy(dtype=float)
        found.append(-scores if signed and not cell["higher_is_better"].astype(bool).all() else scores)
    return found


def _failures_section(failures: list[FailureRecord]) -> Section:
    header = ["job", "variant", "task", "protocol", "seed", "phase", "error"]
    body = [
        [Cell(str(v)) for v in (f.job_id, f.variant, f.task, f.protocol, f.seed_index, f.phase, f.summary)]
        for f in failures
    ]
    return Section("Failed jobs", [Table("Each is in `runs/<job>/error.json` with its traceback.", header, body)])


def _compute_section(summary: pd.DataFrame) -> Section:
    summary = summary[summary["n_seeds"] > 0]
    per_run = summary.drop_duplicates(["variant", "task", "protocol", "label_fraction"])
    grouped = per_run.groupby("variant")
    header = ["variant", "pretraining s", "pretraining images/s", "protocol s", "peak memory MB"]
    body = []
    for variant in _ordered_variants(ranks(summary, HEADLINE_METRIC), summary["variant"]):
        group = grouped.get_group(variant)
        values = [
            (group["pretrain_seconds"].mean(), 1),
            (group["pretrain_images_per_second"].mean(), 1),
            (group["protocol_seconds"].mean(), 1),
            (group["peak_memory_mb"].max(), 0),
        ]
        body.append([Cell(variant), *(Cell(format_number(value, digits), value) for value, digits in values)])
    intro = (
        "Mean per job over tasks, protocols and seeds (a job is one protocol run; the pretraining is shared by "
        "all of a variant's jobs on one modality); peak memory is the largest over jobs. Blank: not recorded "
        "or not applicable (e.g. no pretraining)."
    )
    return Section("Compute", [Table(intro, header, body)])
