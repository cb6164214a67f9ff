"""Leaderboards built from the per-job result records alone.

Every job writes ``<results>/runs/<job_id>/result.json`` (a :class:`ssl_bench.record.ResultRecord`). This module
reads them back, reduces the per-image test scores to one score per seed, then to mean ± std over seeds, compares
and ranks the variants per protocol, and lays the result out as :class:`Section` s of :class:`Table` s that
:func:`render_markdown` and the HTML report (:mod:`ssl_bench.report`) both render. A cell never averages runs
that differ in anything that changes a number: variant (method, options, encoder), profile, pretraining pool (id
and fingerprint), task, protocol and its settings, label fraction.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ssl_bench.errors import DataError
from ssl_bench.record import FailureRecord, MetricRecord, ResultRecord, read_failure, read_record
from ssl_bench.stats import (
    MIN_COLUMNS,
    MIN_SEEDS,
    FriedmanResult,
    SeedComparison,
    bootstrap_interval,
    friedman,
    holm,
    iqm_interval,
    iqm_normalised,
    probability_of_improvement,
    probability_of_improvement_interval,
    seed_comparison,
)

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
    "score",
    "image_std",
    "n_images",
    *COMPUTE_COLUMNS,
    "device",
    "profile",
    "pool",
    "random_encoder",
    "encoder",
    "unix_time",
    "job_id",
    "encoder_digest",
    "images",
]
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
    "profile",
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
    "diff_vs_best",
    "best_diff_low",
    "best_diff_high",
    "p_vs_best",
    "claim_vs_best",
]
#: A claim counts at this Holm-adjusted p-value.
SIGNIFICANCE = 0.05
#: What a comparison with scratch or the column's best can say (the ``claim_vs_*`` columns).
BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"
TOO_FEW_SEEDS, UNTESTABLE = "too few seeds", "untestable"
_COMPARISON_COLUMNS = {
    "scratch": ("diff_vs_scratch", "diff_low", "diff_high", "p_vs_scratch", "claim_vs_scratch"),
    "best": ("diff_vs_best", "best_diff_low", "best_diff_high", "p_vs_best", "claim_vs_best"),
}
RANK_COLUMNS = ["variant", "mean_rank", "wins", "n_columns"]
# Means of the same scores summed in another order can differ in the last bits; compare rounded
# values so that such means still count as ties.
_TIE_DECIMALS = 12
_DEMO_BANNER = (
    "> **Smoke test, not a benchmark.** These results were made with the `demo` profile "
    "(tiny schedules{data}). They show that the pipeline runs end to end; "
    "they are not evidence for comparing methods."
)


# ---------------------------------------------------------------------------------------------
# Loading


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


def load_all(results_dir: Path) -> tuple[list[ResultRecord], list[str], list[FailureRecord]]:
    """The records, the files left out and the failures under ``results_dir``; an error if nothing finished."""
    results, problems = load_results(results_dir)
    if not results:
        left_out = f" ({len(problems)} left out: {problems[0]})" if problems else ""
        raise DataError(
            f"no finished jobs under {results_dir / 'runs'} (no valid runs/*/result.json){left_out}; run the "
            "benchmark first, or point to the results folder that holds runs/"
        )
    return results, problems, load_failures(results_dir)


def load_failures(results_dir: Path) -> list[FailureRecord]:
    """Every readable ``runs/*/error.json`` under ``results_dir``, in job-id order."""
    failures = []
    for path in sorted(Path(results_dir).glob("runs/*/error.json")):
        with contextlib.suppress(DataError):  # a failure record that cannot be read has nothing to show
            failures.append(read_failure(path))
    return failures


# ---------------------------------------------------------------------------------------------
# Tables


def seed_table(results: list[ResultRecord]) -> pd.DataFrame:
    """One row per (variant, task, protocol, label_fraction, metric, seed_index).

    ``score`` is the mean over test images and ``image_std`` their population std (ddof=0). Of several
    records for one run (an older version's job, say), only the newest counts. Variants are told apart by
    profile (``simclr [paper]``) where the results hold several, and by pretraining pool (``simclr {pool}``)
    where one variant has several pools on one task (a pool whose content changed, say).
    """
    latest = _latest_runs(results)
    several_profiles = len({result.profile for result in latest}) > 1
    # Each modality has its own pool: a pool is named only where one variant has several on the same task.
    pools_of: dict[tuple, set[str]] = {}
    for result in latest:
        pools_of.setdefault((result.variant, result.profile, result.task), set()).add(_pool_key(result))
    rows = []
    for result in latest:
        label = result.variant
        if several_profiles:
            label += f" [{result.profile}]"
        if len(pools_of[(result.variant, result.profile, result.task)]) > 1:
            label += f" {{{_pool_key(result)}}}"
        rows += _seed_rows(result, label)
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def _pool_key(result: ResultRecord) -> str:
    return f"{result.pool.id}:{result.pool.fingerprint[:8]}" if result.pool else ""


def _latest_runs(results: Iterable[ResultRecord]) -> list[ResultRecord]:
    # A re-run after a version bump writes a new job beside the old one: two files must not count as two seeds.
    newest: dict[tuple, ResultRecord] = {}
    for result in sorted(results, key=lambda r: (r.unix_time, r.job_id)):
        key = (
            result.variant,
            result.profile,
            _pool_key(result),
            result.task,
            result.protocol.label,
            result.label_fraction,
            result.seed_index,
        )
        newest[key] = result
    return list(newest.values())


def _seed_rows(result: ResultRecord, label: str) -> list[dict[str, Any]]:
    compute = result.compute
    common = {
        "variant": label,
        "method": result.method,
        "task": result.task,
        "protocol": result.protocol.label,
        "label_fraction": result.label_fraction,
        "seed_index": result.seed_index,
        **{column: _float_or_nan(getattr(compute, column)) for column in COMPUTE_COLUMNS},
        "device": compute.device,
        "profile": result.profile,
        "pool": _pool_key(result),
        "random_encoder": result.protocol.frozen_encoder and not result.pretrained,
        "encoder": result.encoder,
        "unix_time": result.unix_time,
        "job_id": result.job_id,
        "encoder_digest": result.encoder_digest,
    }
    rows = []
    for metric, scores in result.metrics.items():
        score, image_std, n_images = _reduce(scores, f"job {result.job_id}, {result.protocol.label}/{metric}")
        rows.append(
            {
                **common,
                "headline": metric == result.headline_metric,
                "higher_is_better": scores.higher_is_better,
                "metric": metric,
                "score": score,
                "image_std": image_std,
                "n_images": n_images,
                "images": _images(scores),
            }
        )
    return rows


def _images(scores: MetricRecord) -> dict[str, float] | None:
    """Per-image scores by image id (for paired tests and the bootstrap); None for a set-level metric."""
    if scores.per_image is None:
        return None
    return {i: math.nan if v is None else v for i, v in zip(scores.ids, scores.per_image, strict=True)}


def _reduce(scores: MetricRecord, where: str) -> tuple[float, float, int | None]:
    """(score, std over images, image count) of one seed: a set-level metric (AUC) has no per-image std."""
    if scores.value is not None:
        return scores.value, math.nan, None
    if not scores.per_image:
        raise DataError(f"{where}: no per-image scores; delete that job's runs/<job_id> folder and rerun it")
    # null scores become NaN and propagate: an undefined image score must not vanish from a mean.
    per_image = np.asarray([math.nan if v is None else v for v in scores.per_image], dtype=float)
    return float(per_image.mean()), float(per_image.std(ddof=0)), int(per_image.size)


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def summary_table(results: list[ResultRecord], failures: Iterable[FailureRecord] = ()) -> pd.DataFrame:
    """The long leaderboard: one row per (variant, task, protocol, label_fraction, metric).

    ``mean``/``std`` are over seeds of the per-seed mean score (std ddof=1), with a t-based 95% CI;
    both are NaN with a single seed. ``image_std`` is the mean over seeds of the per-seed std over
    test images. Compute columns are means over the seeds that recorded them. ``n_failed`` counts the seeds
    whose job failed (and was not since run again successfully); a cell whose every seed failed is a row with
    no mean, so that it shows as failed rather than as missing.
    """
    seeds = seed_table(results)
    rows = [_summarise(keys, group) for keys, group in seeds.groupby(RUN_KEYS, sort=False)]
    summary = _seed_comparisons(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), seeds)
    summary = _with_failures(summary, seeds, failures, results)
    return _sort_runs(summary).reset_index(drop=True)


def _seed_comparisons(summary: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """Each cell against ``scratch`` and against its column's best, with training seeds as the replicates
    (:func:`ssl_bench.stats.seed_comparison`): the difference of means with its 95% interval, the p-value
    Holm-adjusted over the variant's own columns of each (protocol, metric) table, and the claim it supports."""
    cells = {key: group for key, group in seeds.groupby(RUN_KEYS, sort=False)}
    summary = summary.copy()
    for reference, references in (("scratch", _scratch_references(summary)), ("best", _best_references(summary))):
        difference, low, high, p_value, claim = _COMPARISON_COLUMNS[reference]
        found = {index: _compare(cells, summary.loc[index], summary.loc[other]) for index, other in references.items()}
        for column, field in ((difference, "difference"), (low, "ci_low"), (high, "ci_high")):
            summary[column] = [getattr(found.get(i), field, math.nan) for i in summary.index]
        tested = [i for i, found_i in found.items() if found_i is not None and not math.isnan(found_i.p_value)]
        summary[p_value] = math.nan
        for _, family in summary.loc[tested].groupby(["variant", "protocol", "metric"]) if tested else []:
            summary.loc[family.index, p_value] = holm([found[i].p_value for i in family.index])
        summary[claim] = [
            _claim(found[i], summary.at[i, p_value], summary.at[i, "higher_is_better"]) if i in found else ""
            for i in summary.index
        ]
    return summary


def _compare(cells: dict[tuple, pd.DataFrame], row: pd.Series, reference: pd.Series) -> SeedComparison | None:
    """``row``'s cell against ``reference``'s over their seeds; None where the seeds cannot support a claim."""
    mine, theirs = cells[tuple(row[RUN_KEYS])], cells[tuple(reference[RUN_KEYS])]
    return seed_comparison(
        mine["score"].to_numpy(dtype=float),
        theirs["score"].to_numpy(dtype=float),
        a_single_encoder=bool(row["single_encoder"]),
        b_single_encoder=bool(reference["single_encoder"]),
    )


def _claim(comparison: SeedComparison | None, adjusted_p: float, higher_is_better: bool) -> str:
    if comparison is None:
        return TOO_FEW_SEEDS
    if math.isnan(adjusted_p):
        return UNTESTABLE
    if adjusted_p >= SIGNIFICANCE:
        return NOT_DISTINGUISHABLE
    return BETTER if (comparison.difference > 0) == bool(higher_is_better) else WORSE


def _scratch_references(summary: pd.DataFrame) -> dict[int, int]:
    """Row index -> the row of ``scratch`` with the same task, protocol, fraction, metric, profile and encoder
    (none where there are several scratch variants to choose from)."""
    compared_on = ["task", "protocol", "label_fraction", "metric", "profile", "encoder"]
    scratch = summary[(summary["method"] == "scratch") & (summary["n_seeds"] > 0)]
    references = {key: rows.index[0] for key, rows in scratch.groupby(compared_on, sort=False) if len(rows) == 1}
    return {
        index: references[key]
        for index, row in summary.iterrows()
        if row["method"] != "scratch" and row["n_seeds"] > 0 and (key := tuple(row[compared_on])) in references
    }


def _best_references(summary: pd.DataFrame) -> dict[int, int]:
    """Row index -> the row of its table column's best mean (same task, protocol, fraction and metric)."""
    references = {}
    for _, column in summary.groupby(["task", "protocol", "label_fraction", "metric"], sort=False):
        signed = np.where(column["higher_is_better"].astype(bool), column["mean"], -column["mean"])
        if np.isnan(signed).all():
            continue
        best = column.index[int(np.nanargmax(np.round(signed, _TIE_DECIMALS)))]
        references |= {index: best for index in column.index if index != best and column.at[index, "n_seeds"] > 0}
    return references


def _with_failures(
    summary: pd.DataFrame, seeds: pd.DataFrame, failures: Iterable[FailureRecord], results: list[ResultRecord]
) -> pd.DataFrame:
    several_profiles = len({result.profile for result in results}) > 1
    counts: dict[tuple, int] = {}
    for failure in failures:
        variant = f"{failure.variant} [{failure.profile}]" if several_profiles else failure.variant
        cell = (variant, failure.task, failure.protocol, failure.label_fraction)
        same_seed = seeds[
            (seeds["variant"] == variant)
            & (seeds["task"] == failure.task)
            & (seeds["protocol"] == failure.protocol)
            & (seeds["label_fraction"] == failure.label_fraction)
            & (seeds["seed_index"] == failure.seed_index)
        ]
        if not (same_seed["unix_time"] > failure.unix_time).any():  # not run again successfully since
            counts[cell] = counts.get(cell, 0) + 1
    cells = list(zip(summary["variant"], summary["task"], summary["protocol"], summary["label_fraction"], strict=True))
    summary = summary.assign(n_failed=[counts.get(cell, 0) for cell in cells])
    failed_only = [
        {**dict(zip(RUN_KEYS[:4], cell, strict=True)), "metric": "", "headline": True, "higher_is_better": True}
        | {"n_seeds": 0, "mean": math.nan, "n_failed": count}
        for cell, count in counts.items()
        if cell not in set(cells)
    ]
    if not failed_only:
        return summary
    return pd.concat([summary, pd.DataFrame(failed_only, columns=SUMMARY_COLUMNS)], ignore_index=True)


def _summarise(keys: tuple, group: pd.DataFrame) -> dict[str, Any]:
    scores = group["score"].to_numpy(dtype=float)
    n = scores.size
    mean = float(scores.mean())
    std = float(scores.std(ddof=1)) if n >= 2 else math.nan
    half_width = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n >= 2 else math.nan
    return {
        **dict(zip(RUN_KEYS, keys, strict=True)),
        "method": _join_unique(group["method"]),
        "n_seeds": n,
        "mean": mean,
        "std": std,
        "ci95_low": mean - half_width,
        "ci95_high": mean + half_width,
        "headline": bool(group["headline"].all()),
        "higher_is_better": bool(group["higher_is_better"].all()),
        "image_std": float(group["image_std"].to_numpy(dtype=float).mean()),
        "n_images": group["n_images"].max(),
        **{column: float(group[column].mean()) for column in COMPUTE_COLUMNS},
        "device": _join_unique(group["device"]),
        "profile": _join_unique(group["profile"]),
        "pool": _join_unique(group["pool"]),
        "random_encoder": bool(group["random_encoder"].all()),
        "encoder": _join_unique(group["encoder"]),
        "n_failed": 0,
        "single_encoder": _single_encoder(group["encoder_digest"]),
        **dict(zip(("image_low", "image_high"), _bootstrap(group["images"]), strict=True)),
    }


def _single_encoder(digests: pd.Series) -> bool:
    """Whether every seed of a cell received the same encoder weights (a checkpoint): known from 2 seeds on."""
    return len(digests) >= 2 and digests.notna().all() and digests.nunique() == 1


def _bootstrap(images: pd.Series) -> tuple[float, float]:
    """The 95% interval of the cell's mean from a bootstrap over test images stratified by seed: how precisely the
    test set measures these trained models, not how another training run would score."""
    if any(scores is None for scores in images):
        return math.nan, math.nan
    per_seed = [np.fromiter(scores.values(), dtype=float) for scores in images]
    if any(np.isnan(scores).any() for scores in per_seed):
        return math.nan, math.nan
    return bootstrap_interval(per_seed)


def _join_unique(values: pd.Series) -> str:
    return ",".join(sorted({str(value) for value in values if value}))


def _protocol_key(protocol: str) -> tuple[int, str]:
    name = protocol.split("(")[0]
    order = PROTOCOL_ORDER.index(name) if name in PROTOCOL_ORDER else len(PROTOCOL_ORDER)
    return order, protocol


def _sort_runs(summary: pd.DataFrame) -> pd.DataFrame:
    protocol_rank = summary["protocol"].map(_protocol_key)
    metric_rank = ~summary["headline"].astype(bool)
    return (
        summary.assign(_protocol=protocol_rank, _metric=metric_rank, _fraction=-summary["label_fraction"])
        .sort_values(["_protocol", "task", "_fraction", "_metric", "metric", "variant"], kind="stable")
        .drop(columns=["_protocol", "_metric", "_fraction"])
    )


# ---------------------------------------------------------------------------------------------
# Ranking


def ranks(summary: pd.DataFrame, metric: str = HEADLINE_METRIC) -> pd.DataFrame:
    """Mean rank and wins per variant over the (task, protocol, label_fraction) columns.

    Only columns that every variant completed count. Rank 1 is the best score in the metric's own direction
    (highest, or lowest for a lower-is-better metric), ties share the average rank, and every variant tied
    for a column's best gets a win. Returns ``variant, mean_rank, wins, n_columns``, sorted by ``mean_rank``.
    """
    board = _score_board(summary, metric).dropna(axis="columns", how="any")
    if board.empty:
        return pd.DataFrame(
            {"variant": list(board.index), "mean_rank": math.nan, "wins": 0, "n_columns": 0},
            columns=RANK_COLUMNS,
        )
    rounded = board.round(_TIE_DECIMALS)
    column_ranks = rounded.rank(axis="index", ascending=False, method="average")
    wins = rounded.eq(rounded.max(axis="index"), axis="columns").sum(axis="columns")
    table = pd.DataFrame(
        {
            "variant": board.index,
            "mean_rank": column_ranks.mean(axis="columns").to_numpy(),
            "wins": wins.to_numpy(dtype=int),
            "n_columns": board.shape[1],
        }
    )
    return table.sort_values(["mean_rank", "wins", "variant"], ascending=[True, False, True]).reset_index(drop=True)


def rows_of(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric``; ``HEADLINE_METRIC`` selects each protocol's headline metric."""
    return (
        summary[summary["headline"].astype(bool)] if metric == HEADLINE_METRIC else summary[summary["metric"] == metric]
    )


def _score_board(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Variants × (task, protocol, label_fraction) of mean scores signed so that higher is better; NaN if absent."""
    rows = rows_of(summary, metric)
    signed = rows.assign(signed=np.where(rows["higher_is_better"].astype(bool), rows["mean"], -rows["mean"]))
    return signed.pivot(index="variant", columns=["task", "protocol", "label_fraction"], values="signed")


# ---------------------------------------------------------------------------------------------
# What the tables show: one structure that the Markdown here and the HTML report both render


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


def leaderboard_sections(
    summary: pd.DataFrame, results: list[ResultRecord], failures: list[FailureRecord] = ()
) -> list[Section]:
    """The leaderboard's sections: what it found, per protocol its tables, then failed jobs and compute."""
    seeds = seed_table(results)
    sections = [findings_section(summary)]
    for protocol in protocols_of(summary):
        sections += _protocol_sections(summary[summary["protocol"] == protocol], seeds, protocol)
    if failures:
        sections.append(_failures_section(failures))
    return [*sections, _compute_section(summary)]


def findings_section(summary: pd.DataFrame) -> Section:
    """Per protocol: the ranking (with its critical difference where informative) and every claim against scratch
    with its seeds and test images, or one honest line when there is none."""
    blocks: list[str | Table] = [f"How a claim is made: {CLAIM_RULE}"]
    for protocol in protocols_of(summary):
        rows = rows_of(summary[summary["protocol"] == protocol], HEADLINE_METRIC)
        blocks.append(_ranking_line(rows, protocol))
        claims = rows[rows["claim_vs_scratch"].isin([BETTER, WORSE])]
        blocks.append(_claims_table(claims, protocol) if len(claims) else _no_claim_line(rows))
    return Section("Findings", blocks)


def _ranking_line(rows: pd.DataFrame, protocol: str) -> str:
    metrics = ", ".join(sorted(set(rows["metric"])))
    order = ranks(rows, HEADLINE_METRIC).dropna(subset=["mean_rank"])
    if order.empty:
        return f"**`{protocol}`** ({metrics}): no column that every variant completed, so no ranking."
    n_columns = int(order["n_columns"].iloc[0])
    ranking = ", ".join(f"`{r.variant}` {r.mean_rank:.2f}" for r in order.itertuples(index=False))
    line = f"**`{protocol}`** ({metrics}), mean rank over {n_columns} column(s): {ranking}."
    found = friedman_result(rows)
    if found is None or not found[1].informative:
        return f"{line} A critical difference needs {MIN_COLUMNS} columns: the order is not a finding."
    result, top = found[1], float(order["mean_rank"].iloc[0])
    tied = [f"`{r.variant}`" for r in order.itertuples(index=False) if r.mean_rank - top < result.critical_difference]
    return (
        f"{line} Friedman p = {result.p_value:.3g}; within the critical difference ({result.critical_difference:.2f})"
        f" of the best: {', '.join(tied)}."
    )


def _claims_table(claims: pd.DataFrame, protocol: str) -> Table:
    body = []
    for row in claims.itertuples(index=False):
        sign = "▲" if row.claim_vs_scratch == BETTER else "▼"
        body.append(
            [
                Cell(f"{row.variant} {sign}"),
                Cell(column_label(row.task, row.label_fraction)),
                Cell(f"{row.mean:.3f}", row.mean),
                Cell(f"{row.diff_vs_scratch:+.3f}", row.diff_vs_scratch),
                Cell(f"[{row.diff_low:+.3f}, {row.diff_high:+.3f}]", row.diff_low),
                Cell(str(row.n_seeds), row.n_seeds),
                Cell(_format_number(row.n_images, 0), row.n_images),
                Cell(f"{row.p_vs_scratch:.2g}", row.p_vs_scratch),
            ]
        )
    header = ["variant", "column", "score", "vs scratch", "95% CI", "seeds", "test images", "p (Holm)"]
    return Table(f"`{protocol}`: claims against scratch", header, body)


def _no_claim_line(rows: pd.DataFrame) -> str:
    claims = set(rows["claim_vs_scratch"]) - {""}
    seeds = _seed_range(rows)
    if not claims:
        return "Nothing to claim against: no `scratch` cell to compare with."
    if claims == {TOO_FEW_SEEDS}:
        return (
            f"**Too few seeds to claim anything** against `scratch`: {seeds} seed(s) per cell, a claim needs "
            f"{MIN_SEEDS} per variant (`--seeds {MIN_SEEDS}`)."
        )
    return (
        f"**No variant is distinguishable from `scratch`** in any column ({seeds} seed(s) per cell, p >= "
        f"{SIGNIFICANCE} after Holm over each variant's columns)."
    )


def demo_banner(results: list[ResultRecord]) -> str | None:
    """The warning that demo-profile results are a smoke test, if any result is one."""
    if not any(result.profile == "demo" for result in results):
        return None
    synthetic = all(result.task_modality.startswith("synthetic") for result in results)
    return _DEMO_BANNER.format(data=", synthetic data" if synthetic else "")


def render_markdown(
    summary: pd.DataFrame,
    results: list[ResultRecord],
    problems: list[str] = (),
    failures: list[FailureRecord] = (),
) -> str:
    """The leaderboard as Markdown: one table per protocol, failed jobs, a compute table and a footnote."""
    lines = ["# ssl-bench leaderboard", ""]
    if banner := demo_banner(results):
        lines += [banner, ""]
    if problems:
        lines += [f"{len(problems)} result file(s) left out:", "", *(f"- {problem}" for problem in problems), ""]
    if summary.empty:
        return "\n".join([*lines, "No results yet.", ""])
    for section in leaderboard_sections(summary, results, failures):
        lines += [f"{'#' * section.level} {section.title}", ""]
        for block in section.blocks:
            lines += [block, ""] if isinstance(block, str) else [block.caption, "", *_markdown_table(block), ""]
    lines += _footnote(summary, {result.profile for result in results})
    return "\n".join(lines)


def _markdown_table(table: Table) -> list[str]:
    def text(cell: Cell) -> str:
        shown = f"**{cell.text}**" if cell.bold else cell.text
        return (shown + cell.marks).replace("|", "\\|")

    separator = ["---", *(["---:"] * (len(table.header) - 1))]
    body = [[text(cell) for cell in row] for row in table.rows]
    return ["| " + " | ".join(cells) + " |" for cells in [table.header, separator, *body]]


def protocols_of(summary: pd.DataFrame) -> list[str]:
    return sorted(summary["protocol"].unique(), key=_protocol_key)


def _metrics(summary: pd.DataFrame) -> list[str]:
    """The headline first, then every metric that is some task's secondary metric."""
    return [HEADLINE_METRIC, *sorted(set(summary.loc[~summary["headline"].astype(bool), "metric"]))]


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
    for metric in _metrics(rows)[1:]:
        table = _metric_table(rows_of(rows, metric), order, with_ranks=False)
        sections.append(Section(f"`{protocol}`: {metric}", [table], level=3))
    return sections


def _aggregate_table(rows: pd.DataFrame, seeds: pd.DataFrame, order: pd.DataFrame) -> Table | None:
    """Per variant over the columns every variant completed: the IQM of scratch-normalised headline scores
    (no one easy task dominates it) and the probability of beating scratch on a random column, each with its 95%
    bootstrap interval over training seeds."""
    headline = rows_of(rows, HEADLINE_METRIC)
    board = _score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
    scratch = [v for v in board.index if set(headline.loc[headline["variant"] == v, "method"]) == {"scratch"}]
    bounded = headline["higher_is_better"].astype(bool).all() and headline["mean"].between(0, 1).all()
    if len(scratch) != 1 or board.empty or not bounded or (board.loc[scratch[0]] >= 1).any():
        return None
    reference, reference_seeds = board.loc[scratch[0]].to_numpy(), _seed_scores(seeds, scratch[0], board.columns)
    body = []
    for variant in _ordered_variants(order, board.index):
        if variant == scratch[0]:
            continue
        variant_seeds = _seed_scores(seeds, variant, board.columns)
        iqm = iqm_normalised(board.loc[variant].to_numpy(), reference)
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
    caption = (
        f"Over the {board.shape[1]} column(s) every variant completed: the interquartile mean of "
        "(score - scratch) / (1 - scratch) (0: no better than scratch, 1: perfect), and the chance that a run of the "
        "variant beats a run of scratch on a random column (ties count half); 95% bootstrap intervals redraw the "
        "training seeds within each column (blank: a column with a single seed has no spread to redraw)."
    )
    header = ["variant", "IQM vs scratch", "IQM 95% interval", "P(beats scratch)", "P 95% interval"]
    return Table(caption, header, body)


def _interval_cell(interval: tuple[float, float], decimals: int = 3) -> Cell:
    low, high = interval
    if math.isnan(low):
        return Cell("")
    return Cell(f"[{low:.{decimals}f}, {high:.{decimals}f}]", low)


def _pairwise_table(rows: pd.DataFrame, seeds: pd.DataFrame, order: pd.DataFrame) -> Table | None:
    """P(a run of the row's variant beats one of the column's on a random column), where there are at least
    :data:`MIN_COLUMNS` columns every variant completed and three variants: fewer columns give chances of 0, 0.5
    and 1 that say nothing, and two variants are the aggregate table already."""
    board = _score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
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


def _friedman_line(rows: pd.DataFrame) -> str:
    """The Friedman test and Nemenyi critical difference over the columns every variant completed."""
    found = friedman_result(rows)
    if found is None:
        return "Friedman test: needs two variants with a common completed column."
    result = found[1]
    if not result.informative:
        return (
            f"Friedman test over {result.n_tasks} column(s) of {result.n_methods} variants: not informative below "
            "5 columns, so not reported."
        )
    return (
        f"Friedman test over {result.n_tasks} columns of {result.n_methods} variants: chi-square "
        f"{result.statistic:.2f}, p = {result.p_value:.3g}; Nemenyi critical difference "
        f"{result.critical_difference:.2f} (mean ranks further apart than this differ at p < 0.05)."
    )


def friedman_result(rows: pd.DataFrame) -> tuple[list[str], FriedmanResult] | None:
    """The Friedman test over one protocol's headline columns that every variant completed (None if fewer than
    two variants share one), with the variants in the order of its mean ranks."""
    board = _score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
    if board.shape[0] < 2 or board.shape[1] < 1:
        return None
    return list(board.index), friedman(board.to_numpy())


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
            cells += [Cell(_format_number(rank, 2), rank), Cell(str(ranked.at[variant, "wins"]))]
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


#: How a claim is made, said in every table that marks claims.
CLAIM_RULE = (
    "training seeds are the replicates, not test images (Welch's t-test on the per-seed scores; a single encoder "
    "that every seed loaded, e.g. a checkpoint, counts as one draw against the other side's spread), p < "
    f"{SIGNIFICANCE} after Holm's correction over the variant's own columns of the protocol's table, so adding a "
    f"variant changes no other variant's ▲/▼. A claim needs {MIN_SEEDS} seeds per variant."
)


def task_columns(rows: pd.DataFrame) -> list[tuple[str, float]]:
    pairs = {(task, float(fraction)) for task, fraction in zip(rows["task"], rows["label_fraction"], strict=True)}
    return sorted(pairs, key=lambda pair: (pair[0], -pair[1]))


def column_label(task: str, fraction: float) -> str:
    return task if fraction == 1.0 else f"{task}@{fraction:g}"


def _ordered_variants(order: pd.DataFrame, present: Iterable[str]) -> list[str]:
    ranked = [variant for variant in order["variant"] if variant in set(present)]
    return ranked + sorted(set(present) - set(ranked))


def _best_mean(rows: pd.DataFrame, task: str, fraction: float) -> float:
    column = rows[(rows["task"] == task) & (rows["label_fraction"] == fraction)]
    means = column["mean"].round(_TIE_DECIMALS)
    return float(means.max() if column["higher_is_better"].astype(bool).all() else means.min())


def _score_cell(row: Any, best: float, most_seeds: int, few_everywhere: bool) -> Cell:
    """Mean (± std over seeds) with its marks; a cell with fewer seeds than the table's others says how many."""
    if row is not None and row.n_seeds == 0 and row.n_failed:
        return Cell("failed")
    if row is None or math.isnan(row.mean):
        return Cell("–")
    text = f"{row.mean:.3f}" if row.n_seeds < 2 else f"{row.mean:.3f} ± {row.std:.3f}"
    marks = {BETTER: " ▲", WORSE: " ▼"}.get(row.claim_vs_scratch, "")
    bold = round(row.mean, _TIE_DECIMALS) == best
    if row.claim_vs_best == NOT_DISTINGUISHABLE and not bold:
        marks += " ≈"
    if TOO_FEW_SEEDS in (row.claim_vs_scratch, row.claim_vs_best) and not few_everywhere:
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
    for reference, (difference, low, high, p_value, claim) in _COMPARISON_COLUMNS.items():
        found = getattr(row, claim)
        if found in (TOO_FEW_SEEDS, UNTESTABLE):
            details.append(f"vs {reference}: {found}")
        elif found:
            details.append(
                f"vs {reference} {getattr(row, difference):+.3f} [{getattr(row, low):+.3f}, {getattr(row, high):+.3f}],"
                f" p {getattr(row, p_value):.2g}"
            )
    return details


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
        body.append([Cell(variant), *(Cell(_format_number(value, digits), value) for value, digits in values)])
    intro = (
        "Mean per job over tasks, protocols and seeds (a job is one protocol run; the pretraining is shared by "
        "all of a variant's jobs on one modality); peak memory is the largest over jobs. Blank: not recorded "
        "or not applicable (e.g. no pretraining)."
    )
    return Section("Compute", [Table(intro, header, body)])


def _seed_range(rows: pd.DataFrame) -> str:
    low, high = int(rows["n_seeds"].min()), int(rows["n_seeds"].max())
    return str(low) if low == high else f"{low} to {high}"


def _footnote(summary: pd.DataFrame, profiles: set[str]) -> list[str]:
    seeds = _seed_range(summary)
    seeds += " seed" if seeds == "1" else " seeds"
    return [
        "---",
        "",
        f"Statistics. Each cell summarises {seeds}: the score of a seed is its mean over the test "
        "images; cells show the mean over seeds ± their std (ddof=1), or the mean alone for one "
        "seed. `leaderboard.csv` adds n_seeds, a t-based 95% CI over seeds (mean ± t(0.975, n−1)·std/√n), "
        "a 95% bootstrap interval over test images stratified by seed (image_low, image_high: how precisely the test "
        "set measures these trained models, not how another run would score), the seed-level comparisons against "
        "scratch and the column's best (difference of means, its Welch 95% CI, Holm-adjusted p, claim), "
        "and image_std, the std over test "
        "images (ddof=0, as in LD-style tables) averaged over seeds. Mean rank and wins count only the "
        "columns (task, label fraction) that every variant in the table completed; rank 1 is best and "
        f"ties share the average rank. Profiles: {', '.join(sorted(profiles)) or 'unknown'}.",
        "",
    ]


def _format_number(value: float, decimals: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{decimals}f}"
