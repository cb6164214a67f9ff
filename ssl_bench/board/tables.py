"""The board's tables, from the result records alone: one row per seed, one per cell (mean over seeds, intervals,
claims, failed seeds), and the rankings.

A cell never averages runs that differ in anything that changes a number: variant (method, options, encoder),
budget, pretraining pool (id and fingerprint), task, protocol and its settings, label fraction.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ssl_bench.board.claims import with_claims
from ssl_bench.board.schema import (
    COMPUTE_COLUMNS,
    HEADLINE_METRIC,
    PROTOCOL_ORDER,
    RANK_COLUMNS,
    RUN_KEYS,
    SEED_COLUMNS,
    SUMMARY_COLUMNS,
    TIE_DECIMALS,
)
from ssl_bench.errors import DataError
from ssl_bench.record import FailureRecord, MetricRecord, ResultRecord
from ssl_bench.stats import FriedmanResult, bootstrap_interval, friedman


def seed_table(results: list[ResultRecord], failures: Iterable[FailureRecord] = ()) -> pd.DataFrame:
    """One row per (variant, task, protocol, label_fraction, metric, seed_index).

    ``score`` is the mean over test images and ``image_std`` their population std (ddof=0). Of several
    records for one run (an older version's job, say), only the newest counts. Rows are named by :class:`RowNames`
    over the records and the ``failures`` together.
    """
    latest = _latest_runs(results)
    names = _row_names(latest, failures)
    return pd.DataFrame(
        [row for result in latest for row in _seed_rows(result, names(_run_of(result)))], columns=SEED_COLUMNS
    )


class RowNames:
    """The one rule that names a table row: the variant, told apart by budget (``simclr [paper]``) where the runs
    hold several, and by pretraining pool (``simclr {pool}``) where one variant has several pools on one task (a
    pool whose content changed, say). Runs are ``(variant, budget, task, pool key)``."""

    def __init__(self, runs: Iterable[tuple[str, str, str, str]]) -> None:
        runs = list(runs)
        self._several_budgets = len({budget for _, budget, _, _ in runs}) > 1
        self._pools: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for variant, budget, task, pool in runs:
            self._pools[(variant, budget, task)].add(pool)

    def __call__(self, run: tuple[str, str, str, str]) -> str:
        variant, budget, task, pool = run
        label = f"{variant} [{budget}]" if self._several_budgets else variant
        return label + f" {{{pool}}}" if len(self._pools[(variant, budget, task)]) > 1 else label


def _row_names(latest: list[ResultRecord], failures: Iterable[FailureRecord]) -> RowNames:
    return RowNames([_run_of(result) for result in latest] + [_failed_run_of(failure) for failure in failures])


def _run_of(result: ResultRecord) -> tuple[str, str, str, str]:
    return result.variant, result.budget, result.task, _pool_key(result)


def _failed_run_of(failure: FailureRecord) -> tuple[str, str, str, str]:
    pretraining = failure.spec.get("pretraining")
    pool = pretraining.get("pool") if isinstance(pretraining, dict) else None
    key = _pool_label(str(pool.get("id", "")), str(pool.get("fingerprint", ""))) if isinstance(pool, dict) else ""
    return failure.variant, failure.budget, failure.task, key


def _pool_key(result: ResultRecord) -> str:
    return _pool_label(result.pool.id, result.pool.fingerprint) if result.pool else ""


def _pool_label(pool_id: str, fingerprint: str) -> str:
    """A pool as a row label shows it: its id and the start of its fingerprint."""
    return f"{pool_id}:{fingerprint[:8]}"


def _latest_runs(results: Iterable[ResultRecord]) -> list[ResultRecord]:
    # A re-run after a version bump writes a new job beside the old one: two files must not count as two seeds.
    newest: dict[tuple, ResultRecord] = {}
    for result in sorted(results, key=lambda r: (r.unix_time, r.job_id)):
        key = (
            result.variant,
            result.budget,
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
        "seed": result.seed,
        **{column: _float_or_nan(getattr(compute, column)) for column in COMPUTE_COLUMNS},
        "device": compute.device,
        "budget": result.budget,
        "pool": _pool_key(result),
        "random_encoder": result.protocol.frozen_encoder and not result.pretrained,
        "encoder": result.encoder,
        "unix_time": result.unix_time,
        "job_id": result.job_id,
        "encoder_digest": result.encoder_digest,
    }
    # A set-level metric (AUC) scores the same test images as the job's per-image metrics: count those.
    test_images = max((len(scores.per_image) for scores in result.metrics.values() if scores.per_image), default=None)
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
                "n_images": test_images if n_images is None else n_images,
                "images": _images(scores),
            }
        )
    return rows


def _images(scores: MetricRecord) -> dict[str, float] | None:
    """Per-image scores by image id (for the test-image bootstrap); None for a set-level metric."""
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


def summary_table(
    results: list[ResultRecord], failures: Iterable[FailureRecord] = (), seeds: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The long leaderboard: one row per (variant, task, protocol, label_fraction, metric).

    ``mean``/``std`` are over seeds of the per-seed mean score (std ddof=1), with a t-based 95% CI;
    both are NaN with a single seed. ``image_std`` is the mean over seeds of the per-seed std over
    test images. Compute columns are means over the seeds that recorded them. ``n_failed`` counts the seeds
    whose job failed (and was not since run again successfully); a cell whose every seed failed is a row with
    no mean, so that it shows as failed rather than as missing. ``seeds`` is :func:`seed_table` of the same
    records and failures, if already built.
    """
    failures = list(failures)
    seeds = seed_table(results, failures) if seeds is None else seeds
    rows = [_summarise(keys, group) for keys, group in seeds.groupby(RUN_KEYS, sort=False)]
    summary = with_claims(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), seeds)
    summary = _with_failures(summary, seeds, failures, _row_names(_latest_runs(results), failures))
    return _sort_runs(summary).reset_index(drop=True)


def _with_failures(
    summary: pd.DataFrame, seeds: pd.DataFrame, failures: list[FailureRecord], names: RowNames
) -> pd.DataFrame:
    counts: dict[tuple, int] = {}
    for failure in failures:
        variant = names(_failed_run_of(failure))
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
        | {"n_seeds": 0, "mean": math.nan, "n_failed": count, "random_encoder": False}
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
        "budget": _join_unique(group["budget"]),
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


def ranks(summary: pd.DataFrame, metric: str = HEADLINE_METRIC) -> pd.DataFrame:
    """Mean rank and wins per variant over the (task, protocol, label_fraction) columns.

    Only columns that every variant completed count. Rank 1 is the best score in the metric's own direction
    (highest, or lowest for a lower-is-better metric), ties share the average rank, and every variant tied
    for a column's best gets a win. Returns ``variant, mean_rank, wins, n_columns``, sorted by ``mean_rank``.
    """
    board = score_board(summary, metric).dropna(axis="columns", how="any")
    if board.empty:
        return pd.DataFrame(
            {"variant": list(board.index), "mean_rank": math.nan, "wins": 0, "n_columns": 0},
            columns=RANK_COLUMNS,
        )
    rounded = board.round(TIE_DECIMALS)
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


def score_board(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Variants × (task, protocol, label_fraction) of mean scores signed so that higher is better; NaN if absent."""
    rows = rows_of(summary, metric)
    signed = rows.assign(signed=np.where(rows["higher_is_better"].astype(bool), rows["mean"], -rows["mean"]))
    return signed.pivot(index="variant", columns=["task", "protocol", "label_fraction"], values="signed")


def protocols_of(summary: pd.DataFrame) -> list[str]:
    return sorted(summary["protocol"].unique(), key=_protocol_key)


def metrics_of(summary: pd.DataFrame) -> list[str]:
    """The headline first, then every metric that is some task's secondary metric."""
    return [HEADLINE_METRIC, *sorted(set(summary.loc[~summary["headline"].astype(bool), "metric"]))]


def task_columns(rows: pd.DataFrame) -> list[tuple[str, float]]:
    pairs = {(task, float(fraction)) for task, fraction in zip(rows["task"], rows["label_fraction"], strict=True)}
    return sorted(pairs, key=lambda pair: (pair[0], -pair[1]))


def column_label(task: str, fraction: float) -> str:
    return task if fraction == 1.0 else f"{task}@{fraction:g}"


def friedman_result(rows: pd.DataFrame) -> tuple[list[str], FriedmanResult] | None:
    """The Friedman test over one protocol's headline columns that every variant completed (None if fewer than
    two variants share one), with the variants in the order of its mean ranks."""
    board = score_board(rows, HEADLINE_METRIC).dropna(axis="columns", how="any")
    if board.shape[0] < 2 or board.shape[1] < 1:
        return None
    return list(board.index), friedman(board.to_numpy())
