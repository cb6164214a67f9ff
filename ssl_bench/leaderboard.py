"""Leaderboards built from the per-job result files alone.

Every job writes ``<results>/runs/<job_id>/result.json``. This module reads them back, reduces the
per-image test scores to one score per seed, then to mean ± std over seeds, ranks the variants and
writes ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.png`` next to ``runs/``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from ssl_bench.errors import DataError
from ssl_bench.results import write_atomic

SCHEMA_VERSION = 1
#: The ``metric`` name under which tables show each task's own headline metric (Dice for segmentation,
#: AUC for classification), from the result files' ``headline_metric`` (Dice when absent).
HEADLINE_METRIC = "headline"
REGIME_ORDER = ("frozen", "finetune")
COMPUTE_COLUMNS = ("pretrain_seconds", "transfer_seconds", "pretrain_images_per_second", "peak_memory_mb")
RUN_KEYS = ["variant", "task", "regime", "label_fraction", "metric"]
SEED_COLUMNS = [
    "variant",
    "headline",
    "method",
    "task",
    "regime",
    "label_fraction",
    "metric",
    "seed_index",
    "score",
    "image_std",
    "n_images",
    *COMPUTE_COLUMNS,
    "device",
    "profile",
    "job_id",
]
SUMMARY_COLUMNS = [
    "variant",
    "headline",
    "method",
    "task",
    "regime",
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
]
RANK_COLUMNS = ["variant", "mean_rank", "wins", "n_columns"]
_REQUIRED_FIELDS = ("job_id", "variant", "task", "label_fraction", "seed_index", "profile", "metrics")
# Means of the same scores summed in another order can differ in the last bits; compare rounded
# values so that such means still count as ties.
_TIE_DECIMALS = 12
_DEMO_BANNER = (
    "> **Smoke test, not a benchmark.** These results were made with the `demo` profile "
    "(tiny schedules, synthetic data). They show that the pipeline runs end to end; "
    "they are not evidence for comparing methods."
)
_REGIME_TITLES = {"frozen": "Frozen encoder", "finetune": "Fine-tuned encoder"}


# ---------------------------------------------------------------------------------------------
# Loading


def load_results(results_dir: Path) -> list[dict]:
    """Read every ``runs/*/result.json`` under ``results_dir``, in job-id order.

    A job folder without ``result.json`` is a job that has not finished and is skipped; a file that
    cannot be read, is not JSON or has another schema version raises :class:`DataError`.
    """
    paths = sorted(Path(results_dir).glob("runs/*/result.json"))
    return [_read_result(path) for path in paths]


def _read_result(path: Path) -> dict:
    fix = f"delete {path.parent} and rerun that job to rewrite it"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"result file {path} is unreadable or corrupt ({err}); {fix}") from err
    if not isinstance(result, dict):
        raise DataError(f"result file {path} does not hold a JSON object; {fix}")
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(
            f"result file {path} has schema_version {version!r} but this ssl-bench reads "
            f"schema_version {SCHEMA_VERSION}; {fix} with this version of ssl-bench"
        )
    missing = [field for field in _REQUIRED_FIELDS if field not in result]
    if missing:
        raise DataError(f"result file {path} lacks the field(s) {', '.join(missing)}; {fix}")
    return result


# ---------------------------------------------------------------------------------------------
# Tables


def seed_table(results: list[dict]) -> pd.DataFrame:
    """One row per (variant, task, regime, label_fraction, metric, seed_index).

    ``score`` is the mean over test images and ``image_std`` their population std (ddof=0). Of several
    results for one run (an older version's job, say), only the newest counts. Results of several
    profiles are told apart by the profile in the variant label, e.g. ``simclr [paper]``.
    """
    latest = _latest_runs(results)
    several_profiles = len({result["profile"] for result in latest}) > 1
    rows = [row for result in latest for row in _seed_rows(result, several_profiles)]
    return pd.DataFrame(rows, columns=SEED_COLUMNS)


def _latest_runs(results: Iterable[dict]) -> list[dict]:
    # A re-run after a version bump writes a new job beside the old one: two files must not count as two seeds.
    newest: dict[tuple, dict] = {}
    for result in sorted(results, key=lambda r: (r.get("unix_time", 0.0), str(r["job_id"]))):
        key = (result["variant"], result["task"], float(result["label_fraction"]), int(result["seed_index"]))
        newest[(*key, result["profile"])] = result
    return list(newest.values())


def _seed_rows(result: dict, label_profile: bool) -> list[dict[str, Any]]:
    job = result["job_id"]
    compute = result.get("compute") or {}
    common = {
        "variant": f"{result['variant']} [{result['profile']}]" if label_profile else result["variant"],
        "method": result.get("method", ""),
        "task": result["task"],
        "label_fraction": float(result["label_fraction"]),
        "seed_index": int(result["seed_index"]),
        **{column: _float_or_nan(compute.get(column)) for column in COMPUTE_COLUMNS},
        "device": compute.get("device") or "",
        "profile": result["profile"],
        "job_id": job,
    }
    headline = result.get("headline_metric", "dice")
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        raise DataError(f"job {job}: 'metrics' is not an object; delete runs/{job} and rerun that job")
    rows = []
    for regime, by_metric in metrics.items():
        for metric, scores in by_metric.items():
            score, image_std, n_images = _reduce(scores, f"job {job}, {regime}/{metric}")
            rows.append(
                {
                    **common,
                    "headline": metric == headline,
                    "regime": regime,
                    "metric": metric,
                    "score": score,
                    "image_std": image_std,
                    "n_images": n_images,
                }
            )
    return rows


def _reduce(scores: Any, where: str) -> tuple[float, float, int | None]:
    """(score, std over images, image count) of one seed: a set-level metric (AUC) has no per-image std."""
    if isinstance(scores, dict) and isinstance(scores.get("value"), (int, float)):
        return float(scores["value"]), math.nan, scores.get("n_images")
    per_image = _per_image(scores, where)
    return float(per_image.mean()), float(per_image.std(ddof=0)), int(per_image.size)


def _per_image(scores: Any, where: str) -> np.ndarray:
    fix = "delete that job's runs/<job_id> folder and rerun it"
    if not isinstance(scores, dict) or not isinstance(scores.get("per_image"), list):
        raise DataError(f"{where}: expected an object with a 'per_image' list or a 'value'; {fix}")
    ids = scores.get("ids")
    if ids is not None and len(ids) != len(scores["per_image"]):
        raise DataError(f"{where}: {len(scores['per_image'])} scores but {len(ids)} image ids; {fix}")
    if not scores["per_image"]:
        raise DataError(f"{where}: no per-image scores; {fix}")
    # null scores become NaN and propagate: an undefined image score must not vanish from a mean.
    return np.asarray(scores["per_image"], dtype=float)


def _float_or_nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def summary_table(results: list[dict]) -> pd.DataFrame:
    """The long leaderboard: one row per (variant, task, regime, label_fraction, metric).

    ``mean``/``std`` are over seeds of the per-seed mean score (std ddof=1), with a t-based 95% CI;
    both are NaN with a single seed. ``image_std`` is the mean over seeds of the per-seed std over
    test images. Compute columns are means over the seeds that recorded them.
    """
    seeds = seed_table(results)
    rows = [_summarise(keys, group) for keys, group in seeds.groupby(RUN_KEYS, sort=False)]
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return _sort_runs(summary).reset_index(drop=True)


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
        "image_std": float(group["image_std"].to_numpy(dtype=float).mean()),
        "n_images": group["n_images"].max(),
        **{column: float(group[column].mean()) for column in COMPUTE_COLUMNS},
        "device": _join_unique(group["device"]),
        "profile": _join_unique(group["profile"]),
    }


def _join_unique(values: pd.Series) -> str:
    return ",".join(sorted({str(value) for value in values if value}))


def _regime_key(regime: str) -> tuple[int, str]:
    order = REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)
    return order, regime


def _sort_runs(summary: pd.DataFrame) -> pd.DataFrame:
    regime_rank = summary["regime"].map(_regime_key)
    metric_rank = ~summary["headline"].astype(bool)
    return (
        summary.assign(_regime=regime_rank, _metric=metric_rank, _fraction=-summary["label_fraction"])
        .sort_values(["_regime", "task", "_fraction", "_metric", "metric", "variant"], kind="stable")
        .drop(columns=["_regime", "_metric", "_fraction"])
    )


# ---------------------------------------------------------------------------------------------
# Ranking


def ranks(summary: pd.DataFrame, metric: str = HEADLINE_METRIC) -> pd.DataFrame:
    """Mean rank and wins per variant over the (task, regime, label_fraction) columns.

    Only columns that every variant completed count. Higher means rank better (rank 1 is best),
    ties share the average rank, and every variant tied for a column's best mean gets a win.
    Returns columns ``variant, mean_rank, wins, n_columns``, sorted by ``mean_rank``.
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


def _rows_of(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows of ``metric``; ``HEADLINE_METRIC`` selects each task's headline metric."""
    return (
        summary[summary["headline"].astype(bool)] if metric == HEADLINE_METRIC else summary[summary["metric"] == metric]
    )


def _score_board(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Variants × (task, regime, label_fraction) table of mean scores; NaN where not completed."""
    rows = _rows_of(summary, metric)
    return rows.pivot(index="variant", columns=["task", "regime", "label_fraction"], values="mean")


# ---------------------------------------------------------------------------------------------
# Markdown


def render_markdown(summary: pd.DataFrame, profiles: set[str]) -> str:
    """The leaderboard as Markdown: one table per regime, a compute table and a footnote."""
    lines = ["# ssl-bench leaderboard", ""]
    if "demo" in profiles:
        lines += [_DEMO_BANNER, ""]
    if summary.empty:
        return "\n".join([*lines, "No results yet.", ""])
    for regime in _regimes(summary):
        lines += _regime_section(summary[summary["regime"] == regime], regime)
    lines += _compute_section(summary)
    lines += _footnote(summary, profiles)
    return "\n".join(lines)


def _regimes(summary: pd.DataFrame) -> list[str]:
    return sorted(summary["regime"].unique(), key=_regime_key)


def _metrics(summary: pd.DataFrame) -> list[str]:
    """The headline first, then every metric that is some task's secondary metric."""
    return [HEADLINE_METRIC, *sorted(set(summary.loc[~summary["headline"].astype(bool), "metric"]))]


def _regime_section(rows: pd.DataFrame, regime: str) -> list[str]:
    title = _REGIME_TITLES.get(regime, regime)
    lines = [f"## {title} (`{regime}`)", ""]
    order = ranks(rows, HEADLINE_METRIC)
    for metric in _metrics(rows):
        headline = metric == HEADLINE_METRIC
        if not headline:
            lines += [f"### {title}: {metric}", ""]
        lines += _metric_table(_rows_of(rows, metric), metric, order, with_ranks=headline)
    return lines


def _metric_table(rows: pd.DataFrame, metric: str, order: pd.DataFrame, with_ranks: bool) -> list[str]:
    columns = _task_columns(rows)
    variants = _ordered_variants(order, rows["variant"])
    by_key = {(r.variant, r.task, r.label_fraction): r for r in rows.itertuples(index=False)}
    best = {col: _best_mean(rows, *col) for col in columns}
    header = ["variant", *(_column_label(*col) for col in columns)]
    if with_ranks:
        header += ["mean rank", "wins"]
    ranked = order.set_index("variant")
    body = []
    for variant in variants:
        cells = [_escape(variant)]
        cells += [_score_cell(by_key.get((variant, *col)), best[col]) for col in columns]
        if with_ranks and variant in ranked.index:
            cells += [_format_number(ranked.at[variant, "mean_rank"], 2), str(ranked.at[variant, "wins"])]
        elif with_ranks:
            cells += ["", ""]
        body.append(cells)
    name = "headline metric (Dice for segmentation, AUC for classification)" if with_ranks else metric
    caption = f"{name}, mean ± std over seeds (higher is better; best in bold)"
    return [caption, "", *_table(header, body), ""]


def _task_columns(rows: pd.DataFrame) -> list[tuple[str, float]]:
    pairs = {(task, float(fraction)) for task, fraction in zip(rows["task"], rows["label_fraction"], strict=True)}
    return sorted(pairs, key=lambda pair: (pair[0], -pair[1]))


def _column_label(task: str, fraction: float) -> str:
    return task if fraction == 1.0 else f"{task}@{fraction:g}"


def _ordered_variants(order: pd.DataFrame, present: Iterable[str]) -> list[str]:
    ranked = [variant for variant in order["variant"] if variant in set(present)]
    return ranked + sorted(set(present) - set(ranked))


def _best_mean(rows: pd.DataFrame, task: str, fraction: float) -> float:
    column = rows[(rows["task"] == task) & (rows["label_fraction"] == fraction)]
    return float(column["mean"].round(_TIE_DECIMALS).max())


def _score_cell(row: Any, best: float) -> str:
    if row is None or math.isnan(row.mean):
        return "–"
    text = f"{row.mean:.3f}" if row.n_seeds < 2 else f"{row.mean:.3f} ± {row.std:.3f}"
    return f"**{text}**" if round(row.mean, _TIE_DECIMALS) == best else text


def _compute_section(summary: pd.DataFrame) -> list[str]:
    per_run = summary.drop_duplicates(["variant", "task", "label_fraction"])
    grouped = per_run.groupby("variant")
    header = [
        "variant",
        "pretraining s",
        "pretraining images/s",
        "transfer s",
        "peak memory MB",
    ]
    body = []
    for variant in _ordered_variants(ranks(summary, HEADLINE_METRIC), summary["variant"]):
        group = grouped.get_group(variant)
        body.append(
            [
                _escape(variant),
                _format_number(group["pretrain_seconds"].mean(), 1),
                _format_number(group["pretrain_images_per_second"].mean(), 1),
                _format_number(group["transfer_seconds"].mean(), 1),
                _format_number(group["peak_memory_mb"].max(), 0),
            ]
        )
    intro = (
        "Mean per job over tasks and seeds (one job covers both regimes); peak memory is the "
        "largest over jobs. Blank: not recorded or not applicable (e.g. no pretraining)."
    )
    return ["## Compute", "", intro, "", *_table(header, body), ""]


def _footnote(summary: pd.DataFrame, profiles: set[str]) -> list[str]:
    low, high = int(summary["n_seeds"].min()), int(summary["n_seeds"].max())
    seeds = f"{low} seed{'s' if low != 1 else ''}" if low == high else f"{low} to {high} seeds"
    return [
        "---",
        "",
        f"Statistics. Each cell summarises {seeds}: the score of a seed is its mean over the test "
        "images; cells show the mean over seeds ± their std (ddof=1), or the mean alone for one "
        "seed. `leaderboard.csv` adds n_seeds, a t-based 95% CI (mean ± t(0.975, n−1)·std/√n) "
        "and image_std, the std over test images (ddof=0, as in LD-style tables) averaged over "
        "seeds. Mean rank and wins count only the columns (task, label fraction) that every variant "
        "in the table completed; rank 1 is best and ties share the average rank. "
        f"Profiles: {', '.join(sorted(profiles)) or 'unknown'}.",
        "",
    ]


def _format_number(value: float, decimals: int) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    separator = ["---", *(["---:"] * (len(header) - 1))]
    return ["| " + " | ".join(cells) + " |" for cells in [header, separator, *body]]


# ---------------------------------------------------------------------------------------------
# Figure


def plot_leaderboard(summary: pd.DataFrame, profiles: set[str]) -> Figure:
    """Grouped bars of the mean headline metric per task and variant, one panel per regime (Agg canvas)."""
    headline = _rows_of(summary, HEADLINE_METRIC)
    regimes = _regimes(headline) or ["none"]
    n_columns = max(len(_task_columns(headline)), 1)
    n_variants = max(headline["variant"].nunique(), 1)
    width = min(max(6.5, 0.35 * n_columns * (n_variants + 1) + 1.5), 16.0)
    fig = Figure(figsize=(width, 3.2 * len(regimes) + 1.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(regimes), 1, squeeze=False)[:, 0]
    order = _ordered_variants(ranks(headline, HEADLINE_METRIC), headline["variant"])
    for ax, regime in zip(axes, regimes, strict=True):
        _plot_regime(ax, headline[headline["regime"] == regime], regime, order)
    if order:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(order), 4))
    title = "ssl-bench: mean headline metric over seeds\n(Dice; AUC for classification; error bars: std over seeds)"
    if "demo" in profiles:
        title += "\nDEMO PROFILE: smoke test, not evidence"
    fig.suptitle(title)
    return fig


def _plot_regime(ax: Any, rows: pd.DataFrame, regime: str, variants: list[str]) -> None:
    columns = _task_columns(rows)
    by_key = {(r.variant, r.task, r.label_fraction): r for r in rows.itertuples(index=False)}
    bar_width = 0.8 / max(len(variants), 1)
    positions = np.arange(len(columns), dtype=float)
    for i, variant in enumerate(variants):
        found = [by_key.get((variant, *col)) for col in columns]
        means = np.array([r.mean if r is not None else math.nan for r in found])
        stds = np.array([r.std if r is not None else math.nan for r in found])
        x = positions - 0.4 + bar_width * (i + 0.5)
        ax.bar(x, np.nan_to_num(means), bar_width, label=variant, color=f"C{i % 10}")
        shown = np.isfinite(means) & np.isfinite(stds)
        if shown.any():
            ax.errorbar(x[shown], means[shown], yerr=stds[shown], fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(positions, [_column_label(*col) for col in columns], rotation=20, ha="right")
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Dice / AUC")
    ax.set_title(_REGIME_TITLES.get(regime, regime))
    ax.grid(axis="y", alpha=0.3)


# ---------------------------------------------------------------------------------------------
# Writing


def write_leaderboard(results_dir: Path) -> tuple[Path, Path, Path]:
    """Write ``leaderboard.csv``, ``.md`` and ``.png`` under ``results_dir``; return their paths."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise DataError(
            f"no finished jobs under {results_dir / 'runs'} (no runs/*/result.json); run the "
            "benchmark first, or point to the results folder that holds runs/"
        )
    summary = summary_table(results)
    profiles = {str(result["profile"]) for result in results}
    csv_path = results_dir / "leaderboard.csv"
    md_path = results_dir / "leaderboard.md"
    png_path = results_dir / "leaderboard.png"
    write_atomic(csv_path, lambda f: f.write(summary.to_csv(index=False).encode("utf-8")))
    write_atomic(md_path, lambda f: f.write(render_markdown(summary, profiles).encode("utf-8")))
    figure = plot_leaderboard(summary, profiles)
    write_atomic(png_path, lambda f: figure.savefig(f, format="png", dpi=120))
    return csv_path, md_path, png_path
