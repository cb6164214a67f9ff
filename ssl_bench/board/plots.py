"""Figures of the leaderboard, drawn from its summary table on Agg canvases (no display needed).

Every variant keeps one colour and one marker in every figure of a results folder: the styles are assigned in
the sorted order of all the variants present, so ``ld`` and ``scratch`` never share a colour as they did when
ten colours cycled over fifteen methods.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ssl_bench.board.schema import HEADLINE_METRIC
from ssl_bench.board.tables import column_label, protocols_of, rows_of, task_columns
from ssl_bench.stats import FriedmanResult

# tab20's saturated half first, then its light half: the first ten variants get the most distinct colours.
_COLOURS = [mpl.colormaps["tab20"](i) for i in (*range(0, 20, 2), *range(1, 20, 2))]
_MARKERS = "osD^vP*XhH<>p"
_DEMO_NOTE = "DEMO PROFILE: smoke test, not evidence"


@dataclass(frozen=True)
class Style:
    colour: tuple[float, float, float, float]
    marker: str


def variant_styles(variants: Iterable[str]) -> dict[str, Style]:
    """One colour and marker per variant, by its place in the sorted list of all variants."""
    return {
        variant: Style(_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)])
        for i, variant in enumerate(sorted(set(variants)))
    }


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def dot_plot(summary: pd.DataFrame, demo: bool, styles: dict[str, Style] | None = None) -> Figure:
    """Per protocol and task column, the variants' mean headline scores as dots sorted by score, with the 95%
    bootstrap interval (or the seed-level t interval where no per-image scores exist) as bars."""
    headline = rows_of(summary[summary["n_seeds"] > 0], HEADLINE_METRIC)
    styles = styles or variant_styles(headline["variant"])
    panels = [
        (protocol, column)
        for protocol in protocols_of(headline)
        for column in task_columns(headline[headline["protocol"] == protocol])
    ]
    n_columns = min(len(panels), 3) or 1
    n_rows = math.ceil(len(panels) / n_columns) or 1
    n_variants = max(headline["variant"].nunique(), 1)
    figure = _figure(4.2 * n_columns + 1.0, (0.22 * n_variants + 1.1) * n_rows + 0.8)
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    for ax, (protocol, (task, fraction)) in zip(axes, panels, strict=False):
        cell = headline[
            (headline["protocol"] == protocol) & (headline["task"] == task) & (headline["label_fraction"] == fraction)
        ]
        _dot_panel(ax, cell, styles)
        ax.set_title(f"{protocol}: {column_label(task, fraction)}", fontsize=9)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    title = "Mean headline score over seeds (bars: 95% CI over seeds; one seed: its test-image interval)"
    figure.suptitle(f"{title}\n{_DEMO_NOTE}" if demo else title)
    return figure


def _dot_panel(ax, cell: pd.DataFrame, styles: dict[str, Style]) -> None:
    higher = bool(cell["higher_is_better"].all())
    ordered = cell.sort_values("mean", ascending=higher)  # best at the top
    for y, row in enumerate(ordered.itertuples(index=False)):
        # Seeds are the replicates; a single seed has only the test-image interval of its one trained model.
        low, high = (row.ci95_low, row.ci95_high) if not math.isnan(row.ci95_low) else (row.image_low, row.image_high)
        style = styles[row.variant]
        if not math.isnan(low):
            ax.plot([low, high], [y, y], color=style.colour, linewidth=1.5)
        ax.plot(row.mean, y, marker=style.marker, color=style.colour, markersize=6, linestyle="none")
    ax.set_yticks(range(len(ordered)), list(ordered["variant"]), fontsize=8)
    ax.set_xlabel(f"{'/'.join(sorted(set(cell['metric'])))} ({'higher' if higher else 'lower'} is better)")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(axis="x", alpha=0.3)
    ax.margins(y=0.08)


def cd_diagram(variants: list[str], result: FriedmanResult, styles: dict[str, Style]) -> Figure:
    """Demšar's critical-difference diagram: mean ranks on an axis (1 = best, on the left), with a thick bar joining
    each maximal group of variants whose mean ranks differ by less than the Nemenyi critical difference."""
    order = np.argsort(result.mean_ranks, kind="stable")
    names = [variants[i] for i in order]
    ranks = np.asarray(result.mean_ranks)[order]
    k = len(names)
    half = math.ceil(k / 2)
    figure = _figure(8.0, 1.6 + 0.28 * half)
    ax = figure.subplots()
    ax.set_xlim(0.5 - 1.8, k + 0.5 + 1.8)
    ax.set_ylim(-(half + 1.0) * 0.3 - 0.4, 0.55)
    ax.set_axis_off()
    ax.plot([1, k], [0, 0], color="black", linewidth=1)
    for tick in range(1, k + 1):
        ax.plot([tick, tick], [0, 0.06], color="black", linewidth=1)
        ax.text(tick, 0.1, str(tick), ha="center", va="bottom", fontsize=8)
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        left = i < half
        y = -0.3 * ((i if left else k - 1 - i) + 1) - 0.25
        end = 0.5 - 0.3 if left else k + 0.5 + 0.3
        colour = styles[name].colour
        ax.plot([rank, rank, end], [0, y, y], color=colour, linewidth=1.2)
        label = f"{name} ({rank:.2f})"
        ax.text(end, y, label, ha="right" if left else "left", va="center", fontsize=8, color="black")
    for depth, (start, stop) in enumerate(critical_difference_groups(ranks, result.critical_difference)):
        y = -0.12 - 0.07 * depth
        ax.plot([ranks[start] - 0.03, ranks[stop] + 0.03], [y, y], color="black", linewidth=3)
    cd = result.critical_difference
    ax.plot([1, 1 + cd], [0.42, 0.42], color="black", linewidth=1.5)
    ax.text(1 + cd / 2, 0.46, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_title(f"Friedman p = {result.p_value:.3g} over {result.n_tasks} columns", fontsize=9)
    return figure


def critical_difference_groups(ranks: np.ndarray, critical_difference: float) -> list[tuple[int, int]]:
    """Maximal runs (start, stop) of sorted mean ranks that all lie within the critical difference of each other."""
    runs = []
    for start in range(len(ranks)):
        stop = int(np.searchsorted(ranks, ranks[start] + critical_difference, side="left")) - 1
        if stop > start and not (runs and runs[-1][1] >= stop):
            runs.append((start, stop))
    return runs


def fraction_curves(summary: pd.DataFrame, styles: dict[str, Style] | None = None) -> Figure | None:
    """Mean headline score against label fraction, one line per variant, for each (protocol, task) run at several
    fractions; None where no task was."""
    headline = rows_of(summary[summary["n_seeds"] > 0], HEADLINE_METRIC)
    styles = styles or variant_styles(headline["variant"])
    panels = [
        (protocol, task)
        for (protocol, task), rows in headline.groupby(["protocol", "task"], sort=True)
        if rows["label_fraction"].nunique() > 1
    ]
    if not panels:
        return None
    n_columns = min(len(panels), 3)
    figure = _figure(4.6 * n_columns + 2.2, 3.4 * math.ceil(len(panels) / n_columns) + 0.6)
    axes = figure.subplots(math.ceil(len(panels) / n_columns), n_columns, squeeze=False).ravel()
    for ax, (protocol, task) in zip(axes, panels, strict=False):
        rows = headline[(headline["protocol"] == protocol) & (headline["task"] == task)]
        for variant, line in rows.sort_values("label_fraction").groupby("variant", sort=True):
            style = styles[variant]
            ax.plot(line["label_fraction"], line["mean"], marker=style.marker, color=style.colour, label=variant)
        fractions = sorted(set(rows["label_fraction"]))
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{fraction:g}" for fraction in fractions])
        ax.minorticks_off()
        ax.set_xlabel("label fraction")
        ax.set_ylabel("/".join(sorted(set(rows["metric"]))))
        ax.set_title(f"{protocol}: {task}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=8)
    return figure
