"""Leaderboards from result records: every expected number below is worked out by hand."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from records import (
    FUNDUS_POOL,
    NO_RATE,
    SCRATCH,
    record,
    write_runs,
)
from scipy import optimize
from scipy import stats as sps

from ssl_bench.board import Board, write_leaderboard
from ssl_bench.board.load import load_results
from ssl_bench.board.markdown import render_markdown
from ssl_bench.board.tables import ranks, seed_table, summary_table
from ssl_bench.errors import DataError
from ssl_bench.record import (
    FailureRecord,
    MetricRecord,
    PoolRecord,
    ResultRecord,
)

T_975_DF1 = 12.7062047  # Student t quantile 0.975 with 1 degree of freedom, from tables


def load(results_dir: Path, records: list[ResultRecord]) -> list[ResultRecord]:
    """``records`` written as result files and read back as the leaderboard reads them."""
    write_runs(results_dir, records)
    loaded, problems = load_results(results_dir)
    assert problems == []
    assert len(loaded) == len(records)
    return loaded


def row(table: pd.DataFrame, **keys: object) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for column, value in keys.items():
        mask &= table[column] == value
    assert mask.sum() == 1, f"expected one row for {keys}, found {mask.sum()}"
    return table[mask].iloc[0]


def both_protocols(
    job_id: str,
    variant: str,
    task: str,
    seed_index: int,
    scores: list[float],
    finetune: list[float] | None = None,
    **options: object,
) -> list[ResultRecord]:
    """The ``frozen`` record and the ``finetune`` one (the same scores unless ``finetune`` is given)."""
    return [
        record(f"{job_id}-frozen", variant, task, seed_index, scores, **options),
        record(f"{job_id}-finetune", variant, task, seed_index, finetune or scores, protocol="finetune", **options),
    ]


def two_seed_records() -> list[ResultRecord]:
    return [
        *both_protocols(
            "j0",
            "simclr",
            "vessel",
            0,
            [0.5, 0.7],
            compute={"pretrain_seconds": 10.0, "protocol_seconds": 30.0, "peak_memory_mb": None} | NO_RATE,
        ),
        *both_protocols(
            "j1",
            "simclr",
            "vessel",
            1,
            [0.6, 0.8],
            compute={"pretrain_seconds": 14.0, "protocol_seconds": 31.0, "peak_memory_mb": 900.0} | NO_RATE,
        ),
        *both_protocols("j2", "scratch", "vessel", 0, [0.2, 0.4, 0.9], compute=SCRATCH),
    ]


def protocol_section(markdown: str, label: str) -> str:
    """The text of the section ``## `label` `` up to the next ``## `` heading."""
    return markdown.split(f"\n## `{label}`\n", 1)[1].split("\n## ", 1)[0]


def first_table(section: str) -> list[str]:
    """The lines of the first table in ``section`` (the headline table of a protocol section)."""
    lines = section.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


# --- per-seed and summary statistics ---------------------------------------------------------


def test_seed_table_mean_and_population_std_over_images(tmp_path: Path) -> None:
    seeds = seed_table(load(tmp_path, two_seed_records()))
    scratch = row(seeds, variant="scratch", protocol="frozen", metric="dice", seed_index=0)
    # [0.2, 0.4, 0.9]: mean 0.5; deviations -0.3, -0.1, 0.4 -> sqrt(0.26 / 3) with ddof 0
    assert scratch["score"] == pytest.approx(0.5)
    assert scratch["image_std"] == pytest.approx(math.sqrt(0.26 / 3))
    assert scratch["n_images"] == 3
    assert scratch["budget"] == "paper"
    assert scratch["job_id"] == "j2-frozen"
    assert math.isnan(scratch["pretrain_seconds"])
    iou = row(seeds, variant="scratch", protocol="finetune", metric="iou", seed_index=0)
    assert iou["score"] == pytest.approx(0.25)
    # 3 (variant, seed) runs x 2 protocols x 2 metrics
    assert len(seeds) == 12


def test_summary_mean_std_ci_and_image_std_over_seeds(tmp_path: Path) -> None:
    summary = summary_table(load(tmp_path, two_seed_records()))
    simclr = row(summary, variant="simclr", task="vessel", protocol="frozen", metric="dice")
    # per-seed means 0.6 and 0.7
    assert simclr["n_seeds"] == 2
    assert simclr["mean"] == pytest.approx(0.65)
    assert simclr["std"] == pytest.approx(0.0707107, abs=1e-7)
    half = T_975_DF1 * 0.0707107 / math.sqrt(2)  # = 0.6353102
    assert half == pytest.approx(0.6353102, abs=1e-6)
    assert simclr["ci95_low"] == pytest.approx(0.65 - 0.6353102, abs=1e-6)
    assert simclr["ci95_high"] == pytest.approx(0.65 + 0.6353102, abs=1e-6)
    # std over images is 0.1 in both seeds
    assert simclr["image_std"] == pytest.approx(0.1)
    assert simclr["n_images"] == 2
    assert bool(simclr["headline"]) and bool(simclr["higher_is_better"])


def test_summary_compute_is_mean_over_the_seeds_that_recorded_it(tmp_path: Path) -> None:
    summary = summary_table(load(tmp_path, two_seed_records()))
    simclr = row(summary, variant="simclr", protocol="finetune", metric="iou")
    assert simclr["pretrain_seconds"] == pytest.approx(12.0)  # (10 + 14) / 2
    assert simclr["protocol_seconds"] == pytest.approx(30.5)  # (30 + 31) / 2
    assert simclr["peak_memory_mb"] == pytest.approx(900.0)  # one seed unmeasured
    assert math.isnan(simclr["pretrain_images_per_second"])  # never recorded
    scratch = row(summary, variant="scratch", protocol="frozen", metric="dice")
    assert math.isnan(scratch["pretrain_seconds"])


def test_summary_leaves_std_and_ci_blank_for_one_seed(tmp_path: Path) -> None:
    summary = summary_table(load(tmp_path, two_seed_records()))
    scratch = row(summary, variant="scratch", protocol="frozen", metric="dice")
    assert scratch["n_seeds"] == 1
    assert scratch["mean"] == pytest.approx(0.5)
    assert math.isnan(scratch["std"])
    assert math.isnan(scratch["ci95_low"])
    assert math.isnan(scratch["ci95_high"])


def test_summary_has_one_row_per_variant_task_protocol_fraction_metric(tmp_path: Path) -> None:
    records = [
        *both_protocols("a", "simclr", "lung", 0, [0.5]),
        *both_protocols("b", "simclr", "lung", 0, [0.3], fraction=0.2),
        *both_protocols("c", "simclr", "lung", 1, [0.4], fraction=0.2),
    ]
    summary = summary_table(load(tmp_path, records))
    assert len(summary) == 2 * 2 * 2  # 2 fractions x 2 protocols x 2 metrics
    low = row(summary, label_fraction=0.2, protocol="frozen", metric="dice")
    assert low["n_seeds"] == 2
    assert low["mean"] == pytest.approx(0.35)  # (0.3 + 0.4) / 2


def test_of_two_records_of_the_same_run_only_the_newest_counts(tmp_path: Path) -> None:
    # Once with the newer record under the later job id, once under the earlier: time decides, not the id.
    for case, (time_a, time_b) in enumerate([(100.0, 200.0), (200.0, 100.0)]):
        newest = "b" if time_b > time_a else "a"
        records = [
            record("a", scores=[0.5], unix_time=time_a),
            record("b", scores=[0.6], unix_time=time_b),
        ]
        seeds = seed_table(load(tmp_path / str(case), records))
        dice = row(seeds, protocol="frozen", metric="dice")
        assert dice["job_id"] == newest
        assert dice["score"] == pytest.approx({"a": 0.5, "b": 0.6}[newest])
        assert row(summary_table(records), metric="dice")["n_seeds"] == 1


def test_records_of_two_budgets_are_told_apart_by_label(tmp_path: Path) -> None:
    records = [record("d", scores=[0.5], budget="demo"), record("p", scores=[0.7])]
    summary = summary_table(load(tmp_path, records))
    assert row(summary, variant="simclr [demo]", protocol="frozen", metric="dice")["mean"] == pytest.approx(0.5)
    assert row(summary, variant="simclr [paper]", protocol="frozen", metric="dice")["mean"] == pytest.approx(0.7)


def test_a_set_level_metric_is_a_headline_without_image_std(tmp_path: Path) -> None:
    metrics = {
        "auc": MetricRecord(higher_is_better=True, value=0.9),
        "acc": MetricRecord(higher_is_better=True, per_image=[1, 0, 1, 1], ids=["a", "b", "c", "d"]),
    }
    rec = record("c", task="pneumonia", protocol="linear-probe", metrics=metrics, headline="auc")
    records = load(tmp_path, [rec])
    summary = summary_table(records)
    auc = row(summary, metric="auc")
    assert (auc["mean"], bool(auc["headline"]), math.isnan(auc["image_std"])) == (0.9, True, True)
    assert auc["n_images"] == 4  # the test images its job's accuracy counted
    acc = row(summary, metric="acc")
    assert acc["mean"] == pytest.approx(0.75) and not bool(acc["headline"])
    assert acc["image_std"] == pytest.approx(math.sqrt(3 / 16))  # deviations 0.25, -0.75, 0.25, 0.25
    markdown = render_markdown(Board(tmp_path, records))
    assert "| simclr | **0.900** | 1.00 | 1 |" in markdown
    assert "### `linear-probe`: acc" in markdown


# --- pools and protocols ------------------------------------------------------------------------


def test_two_pools_of_one_variant_are_two_rows_never_one_cell(tmp_path: Path) -> None:
    eyepacs = PoolRecord("fundus", "aaaaaaaa" + "1" * 56)
    other_copy = PoolRecord("fundus", "cccccccc" + "2" * 56)  # same id, other content
    records = [
        record("p1", scores=[0.5], pool=eyepacs),
        record("p2", scores=[0.9], pool=other_copy),
        record("s", "scratch", scores=[0.3]),
    ]
    loaded = load(tmp_path, records)
    summary = summary_table(loaded)
    dice = summary[summary["metric"] == "dice"].set_index("variant")
    # 0.5 and 0.9 stay apart (a merged cell would read 0.7 over two "seeds"); scratch has no pool, no suffix
    assert dice["mean"].to_dict() == pytest.approx(
        {"simclr {fundus:aaaaaaaa}": 0.5, "simclr {fundus:cccccccc}": 0.9, "scratch": 0.3}
    )
    assert set(dice["n_seeds"]) == {1}
    table = first_table(protocol_section(render_markdown(Board(tmp_path, loaded)), "frozen"))
    assert table[2:] == [
        "| simclr {fundus:cccccccc} | **0.900** | 1.00 | 1 |",
        "| simclr {fundus:aaaaaaaa} | 0.500 | 2.00 | 0 |",
        "| scratch | 0.300 | 3.00 | 0 |",
    ]


def test_one_pool_per_modality_keeps_the_variant_whole(tmp_path: Path) -> None:
    xray = PoolRecord("xray", "bbbbbbbb" + "3" * 56)
    records = [
        record("f", task="drive", scores=[0.7], modality="fundus", pool=FUNDUS_POOL),
        record("x", task="lung", scores=[0.9], modality="xray", pool=xray),
        record("sf", "scratch", task="drive", scores=[0.6], modality="fundus"),
        record("sx", "scratch", task="lung", scores=[0.8], modality="xray"),
    ]
    table = ranks(summary_table(load(tmp_path, records))).set_index("variant")
    # simclr beats scratch on both tasks: mean rank 1 with 2 wins, scratch 2 with none
    assert table["mean_rank"].to_dict() == {"simclr": 1.0, "scratch": 2.0}
    assert table["wins"].to_dict() == {"simclr": 2, "scratch": 0}


def test_two_protocol_labels_are_two_sections_never_averaged(tmp_path: Path) -> None:
    records = [
        record("a", scores=[0.6], protocol="finetune"),
        record("b", scores=[0.8], protocol="finetune(lr=0.0001)"),
        record("c", scores=[0.4]),
    ]
    loaded = load(tmp_path, records)
    summary = summary_table(loaded)
    dice = summary[summary["metric"] == "dice"].set_index("protocol")
    assert dice["mean"].to_dict() == pytest.approx({"frozen": 0.4, "finetune": 0.6, "finetune(lr=0.0001)": 0.8})
    markdown = render_markdown(Board(tmp_path, loaded))
    headings = [line for line in markdown.split("\n") if line.startswith("## ")]
    # the order: what was found, frozen, then finetune's labels, then the compute table
    assert headings == ["## Findings", "## `frozen`", "## `finetune`", "## `finetune(lr=0.0001)`", "## Compute"]
    assert first_table(protocol_section(markdown, "finetune"))[2:] == ["| simclr | **0.600** | 1.00 | 1 |"]
    assert first_table(protocol_section(markdown, "finetune(lr=0.0001)"))[2:] == ["| simclr | **0.800** | 1.00 | 1 |"]


# --- ranks -------------------------------------------------------------------------------------


def ranking_records() -> list[ResultRecord]:
    # t1: a 0.8, b 0.8, c 0.6 -> ranks a 1.5, b 1.5, c 3 (a and b both win)
    # t2: a 0.5, b 0.7, c 0.9 -> ranks a 3, b 2, c 1
    # t3: only a and b -> excluded; counted, it would give a a second win
    return [
        record("1", "a", "t1", 0, [0.8]),
        record("2", "b", "t1", 0, [0.8]),
        record("3", "c", "t1", 0, [0.6]),
        record("4", "a", "t2", 0, [0.5]),
        record("5", "b", "t2", 0, [0.7]),
        record("6", "c", "t2", 0, [0.9]),
        record("7", "a", "t3", 0, [0.9]),
        record("8", "b", "t3", 0, [0.1]),
    ]


def test_ranks_average_ties_and_skip_columns_a_variant_lacks(tmp_path: Path) -> None:
    table = ranks(summary_table(load(tmp_path, ranking_records())))
    assert list(table["variant"]) == ["b", "c", "a"]
    by_variant = table.set_index("variant")
    assert by_variant.at["a", "mean_rank"] == pytest.approx((1.5 + 3) / 2)
    assert by_variant.at["b", "mean_rank"] == pytest.approx((1.5 + 2) / 2)
    assert by_variant.at["c", "mean_rank"] == pytest.approx((3 + 1) / 2)
    assert by_variant["wins"].to_dict() == {"a": 1, "b": 1, "c": 1}
    assert set(by_variant["n_columns"]) == {2}


def test_ranks_count_each_protocol_as_its_own_columns(tmp_path: Path) -> None:
    # frozen: x 0.9 > y 0.1; finetune: x 0.2 < y 0.4 -> ranks 1+2 each, one win each
    records = [
        *both_protocols("1", "x", "t", 0, [0.9], finetune=[0.2]),
        *both_protocols("2", "y", "t", 0, [0.1], finetune=[0.4]),
    ]
    by_variant = ranks(summary_table(load(tmp_path, records))).set_index("variant")
    assert by_variant.at["x", "mean_rank"] == pytest.approx(1.5)
    assert by_variant.at["y", "mean_rank"] == pytest.approx(1.5)
    assert by_variant["wins"].to_dict() == {"x": 1, "y": 1}
    assert by_variant.at["x", "n_columns"] == 2


def test_ranks_treat_means_equal_up_to_rounding_as_ties(tmp_path: Path) -> None:
    # seed scores 0.1, 0.2, 0.3 in two orders: both mean 0.2, but the float sums come out
    # as 0.20000000000000004 and 0.19999999999999998
    p = [record(f"p{seed}", "p", "t", seed, [score]) for seed, score in enumerate([0.1, 0.2, 0.3])]
    q = [record(f"q{seed}", "q", "t", seed, [score]) for seed, score in enumerate([0.3, 0.2, 0.1])]
    summary = summary_table(load(tmp_path, p + q))
    means = summary.query("metric == 'dice'").set_index("variant")["mean"]
    assert means["p"] == pytest.approx(0.2) and means["q"] == pytest.approx(0.2)
    assert means["p"] != means["q"]  # the case this test is about
    by_variant = ranks(summary).set_index("variant")
    assert by_variant["mean_rank"].to_dict() == {"p": 1.5, "q": 1.5}
    assert by_variant["wins"].to_dict() == {"p": 1, "q": 1}


def test_ranks_use_the_requested_metric(tmp_path: Path) -> None:
    # iou here is dice / 2, so the order is the same but the metric filter must apply
    summary = summary_table(load(tmp_path, ranking_records()))
    table = ranks(summary, metric="iou")
    assert list(table["variant"]) == ["b", "c", "a"]
    assert ranks(summary, metric="hausdorff").empty


def lower_is_better_records() -> list[ResultRecord]:
    # hd95 in pixels, lower is better.
    # t1: a 3, b 5, c 5 -> ranks a 1, b 2.5, c 2.5 (a wins)
    # t2: a 9, b 2, c 4 -> ranks a 3, b 1, c 2 (b wins)
    # mean ranks: a 2.0, b 1.75, c 2.25
    def hd95(value: float) -> dict[str, MetricRecord]:
        return {"hd95": MetricRecord(higher_is_better=False, per_image=[value - 1, value + 1], ids=["i0", "i1"])}

    scores = {("a", "t1"): 3.0, ("b", "t1"): 5.0, ("c", "t1"): 5.0, ("a", "t2"): 9.0, ("b", "t2"): 2.0}
    scores[("c", "t2")] = 4.0
    # Three seeds a cell, 4 below, at and 4 above its mean: std 4 over seeds.
    return [
        record(f"{variant}-{task}-{seed}", variant, task, seed, metrics=hd95(value + shift), headline="hd95")
        for (variant, task), value in scores.items()
        for seed, shift in enumerate((-4.0, 0.0, 4.0))
    ]


def test_a_lower_is_better_metric_ranks_the_lowest_first(tmp_path: Path) -> None:
    table = ranks(summary_table(load(tmp_path, lower_is_better_records())))
    assert list(table["variant"]) == ["b", "a", "c"]
    by_variant = table.set_index("variant")
    assert by_variant["mean_rank"].to_dict() == pytest.approx({"a": 2.0, "b": 1.75, "c": 2.25})
    assert by_variant["wins"].to_dict() == {"a": 1, "b": 1, "c": 0}


def test_markdown_bolds_the_lowest_of_a_lower_is_better_metric(tmp_path: Path) -> None:
    loaded = load(tmp_path, lower_is_better_records())
    section = protocol_section(render_markdown(Board(tmp_path, loaded)), "frozen")
    assert "hd95 (lower is better)" in section
    assert first_table(section) == [
        "| variant | t1 | t2 | mean rank | wins |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| b | 5.000 ± 4.000 ≈ | **2.000 ± 4.000** | 1.75 | 1 |",
        "| a | **3.000 ± 4.000** | 9.000 ± 4.000 ≈ | 2.00 | 1 |",
        "| c | 5.000 ± 4.000 ≈ | 4.000 ± 4.000 ≈ | 2.25 | 0 |",
    ]
    # ≈: seeds 4 apart cannot tell a cell from its column's best. The widest gap, a's 9 against b's 2 on t2, is
    # Welch t = 7 / sqrt(16/3 + 16/3) = 2.14 on 4 degrees of freedom, p = 0.099 (its only comparison: no Holm step).


# --- markdown ----------------------------------------------------------------------------------


def markdown_records(budget: str, modality: str = "xray") -> list[ResultRecord]:
    options = {"budget": budget, "modality": modality}
    return [
        *both_protocols("1", "simclr", "lung", 0, [0.70], **options),
        *both_protocols("2", "simclr", "lung", 1, [0.72], **options),
        *both_protocols("3", "scratch", "lung", 0, [0.60], compute=SCRATCH, **options),
        *both_protocols("4", "simclr", "lung", 0, [0.40], fraction=0.2, **options),
        *both_protocols("5", "scratch", "lung", 0, [0.45], fraction=0.2, compute=SCRATCH, **options),
    ]


def markdown_of(results_dir: Path, records: list[ResultRecord]) -> str:
    write_runs(results_dir, records)
    return write_leaderboard(Board.load(results_dir))[1].read_text(encoding="utf-8")


def test_markdown_bolds_best_and_shows_mean_std_ranks_and_wins(tmp_path: Path) -> None:
    markdown = markdown_of(tmp_path, markdown_records("paper"))
    header, _, first, second = first_table(protocol_section(markdown, "frozen"))
    assert header == "| variant | lung | lung@0.2 | mean rank | wins |"
    # lung: simclr 0.71 ± std(0.70, 0.72) = 0.01414 beats scratch 0.60;
    # lung@0.2: scratch 0.45 beats simclr 0.40 -> both mean rank 1.5, 1 win; ties sort by name.
    # scratch ran one seed where simclr ran two: its cells say so.
    assert first == "| scratch | 0.600 (1 of 2 seeds) | **0.450** (1 of 2 seeds) | 1.50 | 1 |"
    assert second == "| simclr | **0.710 ± 0.014** | 0.400 (1 of 2 seeds) | 1.50 | 1 |"
    assert "## Compute" in markdown
    assert "| scratch |  |  | 20.0 | 800 |" in markdown  # no pretraining: blank, not 0
    assert "| simclr | 10.0 | 50.0 | 20.0 | 800 |" in markdown


def test_compute_table_averages_jobs_and_takes_the_largest_peak_memory(tmp_path: Path) -> None:
    markdown = markdown_of(tmp_path, two_seed_records())
    # simclr: pretraining (10 + 14) / 2 = 12, rate never recorded, protocol (30 + 31) / 2 = 30.5, peak max 900
    assert "| simclr | 12.0 |  | 30.5 | 900 |" in markdown
    assert "| scratch |  |  | 20.0 | 800 |" in markdown


def test_markdown_bolds_every_tied_best_and_orders_rows_by_rank(tmp_path: Path) -> None:
    markdown = markdown_of(tmp_path, ranking_records())
    assert first_table(protocol_section(markdown, "frozen"))[2:] == [
        "| b | **0.800** | 0.700 | 0.100 | 1.75 | 1 |",
        "| c | 0.600 | **0.900** | – | 2.00 | 1 |",
        "| a | **0.800** | 0.500 | **0.900** | 2.25 | 1 |",
    ]


def test_a_random_encoder_is_flagged_under_a_frozen_protocol_only(tmp_path: Path) -> None:
    records = [
        *both_protocols("s", "scratch", "lung", 0, [0.4]),
        *both_protocols("m", "simclr", "lung", 0, [0.6]),
        # linear-probe freezes the encoder too: the record says so in protocol.frozen_encoder
        record("lp", "scratch", protocol="linear-probe", scores=[0.3]),
    ]
    markdown = markdown_of(tmp_path, records)
    frozen = protocol_section(markdown, "frozen")
    assert "`scratch`: no pretraining, so here a frozen random encoder" in frozen
    assert "`simclr`" not in frozen
    assert "random encoder" not in protocol_section(markdown, "finetune")
    assert "`scratch`: no pretraining" in protocol_section(markdown, "linear-probe")
    summary = pd.read_csv(tmp_path / "leaderboard.csv")
    flags = summary[summary["metric"] == "dice"].set_index(["variant", "protocol"])["random_encoder"]
    assert flags.to_dict() == {
        ("scratch", "frozen"): True,
        ("simclr", "frozen"): False,
        ("scratch", "finetune"): False,
        ("simclr", "finetune"): False,
        ("scratch", "linear-probe"): True,
    }


def test_a_pretrained_encoder_under_a_frozen_protocol_is_not_flagged(tmp_path: Path) -> None:
    # the flag needs both: a frozen encoder and no pretraining (a variant's name does not decide it)
    records = [record("a", "baseline", pretrained=True), record("b", "plain", pretrained=False)]
    frozen = protocol_section(markdown_of(tmp_path, records), "frozen")
    assert "`plain`: no pretraining" in frozen and "`baseline`" not in frozen


def test_markdown_warns_about_demo_results_only(tmp_path: Path) -> None:
    demo = markdown_of(tmp_path / "demo", markdown_records("demo", modality="synthetic-fundus"))
    paper = markdown_of(tmp_path / "paper", markdown_records("paper"))
    title, blank, banner = demo.split("\n")[:3]
    assert title.startswith("# ")
    assert blank == ""
    assert "smoke test" in banner.lower() and "`demo`" in banner and "synthetic data" in banner
    assert "smoke test" not in paper.lower()
    assert "\n## `finetune`\n" in paper and "\n## `frozen`\n" in paper
    assert "ddof=1" in paper and "95% CI" in paper and "image_std" in paper


def test_demo_banner_says_synthetic_data_only_when_every_record_is_synthetic(tmp_path: Path) -> None:
    fundus = markdown_of(tmp_path / "fundus", markdown_records("demo", modality="fundus"))
    assert "smoke test" in fundus.lower()
    assert "synthetic" not in fundus
    mixed = [
        record("a", task="phantom", modality="synthetic-xray", budget="demo"),
        record("b", task="drive", modality="fundus", budget="demo"),
    ]
    mixed_markdown = markdown_of(tmp_path / "mixed", mixed)
    assert "smoke test" in mixed_markdown.lower() and "synthetic" not in mixed_markdown


def test_markdown_escapes_pipes_in_variant_labels(tmp_path: Path) -> None:
    markdown = markdown_of(tmp_path, [record("1", "mix(a|b)", "t", 0, [0.5])])
    assert "| mix(a\\|b) | **0.500** | 1.00 | 1 |" in markdown


# --- files ----------------------------------------------------------------------------------------


def test_write_leaderboard_writes_three_files_and_a_readable_csv(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_records())
    (tmp_path / "runs" / "unfinished").mkdir()  # a job still running: no result.json yet
    csv_path, md_path, png_path = write_leaderboard(Board.load(tmp_path))
    assert (csv_path, md_path, png_path) == (
        tmp_path / "leaderboard.csv",
        tmp_path / "leaderboard.md",
        tmp_path / "leaderboard.png",
    )
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md_path.read_text().startswith("# ")
    assert "left out" not in md_path.read_text()  # an unfinished job is no problem
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "leaderboard.csv",
        "leaderboard.md",
        "leaderboard.png",
        "runs",
    ]
    table = pd.read_csv(csv_path)
    for column in ["variant", "task", "protocol", "label_fraction", "metric", "n_seeds", "mean", "std"]:
        assert column in table.columns
    for column in ["ci95_low", "ci95_high", "image_std", "pretrain_seconds", "protocol_seconds"]:
        assert column in table.columns
    assert {"pretrain_images_per_second", "peak_memory_mb", "higher_is_better", "pool"} <= set(table.columns)
    assert len(table) == 2 * 2 * 2  # 2 variants x 2 protocols x 2 metrics
    simclr = row(table, variant="simclr", protocol="frozen", metric="dice")
    assert simclr["mean"] == pytest.approx(0.65)
    assert simclr["ci95_high"] == pytest.approx(0.65 + 0.6353102, abs=1e-6)
    assert simclr["pool"] == "fundus:aaaaaaaa"
    scratch = row(table, variant="scratch", protocol="frozen", metric="dice")
    assert math.isnan(scratch["ci95_low"]) and math.isnan(scratch["std"])


def test_write_leaderboard_replaces_an_old_leaderboard(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_records())
    (tmp_path / "leaderboard.md").write_text("stale")
    _, md_path, _ = write_leaderboard(Board.load(tmp_path))
    assert "stale" not in md_path.read_text()


def test_old_schema_and_truncated_files_are_left_out_and_listed(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_records())
    old = tmp_path / "runs" / "old" / "result.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"schema_version": 1, "job_id": "old", "variant": "simclr", "metrics": {}}))
    cut = tmp_path / "runs" / "j1-frozen" / "result.json"  # simclr's second frozen seed, cut short
    cut.write_text(cut.read_text()[:200])
    records, problems = load_results(tmp_path)
    assert len(records) == 5
    assert len(problems) == 2
    cut_problem, old_problem = problems  # in path order: runs/j1-frozen before runs/old
    assert str(cut) in cut_problem and "corrupt" in cut_problem
    assert str(old) in old_problem and "schema_version 1" in old_problem
    assert all("delete" in problem and "rerun" in problem for problem in problems)

    _, md_path, _ = write_leaderboard(Board.load(tmp_path))
    markdown = md_path.read_text()
    assert "2 result file(s) left out:" in markdown
    assert f"- {cut_problem}" in markdown and f"- {old_problem}" in markdown
    # the valid records still make the tables: frozen simclr now has one seed (0.6), finetune both (0.65 ± 0.071)
    assert first_table(protocol_section(markdown, "frozen"))[2:] == [
        "| simclr | **0.600** | 1.00 | 1 |",
        "| scratch | 0.500 | 2.00 | 0 |",  # one seed: nothing claimed, not even "not distinguishable"
    ]
    assert "| simclr | **0.650 ± 0.071** | 1.00 | 1 |" in protocol_section(markdown, "finetune")


def test_no_results_is_an_actionable_error(tmp_path: Path) -> None:
    (tmp_path / "runs" / "unfinished").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no finished jobs.*run the benchmark"):
        write_leaderboard(Board.load(tmp_path))
    assert not (tmp_path / "leaderboard.csv").exists()


def test_only_unreadable_results_is_an_error_naming_one(tmp_path: Path) -> None:
    bad = tmp_path / "runs" / "j" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 2, "job_id": ')
    with pytest.raises(DataError, match=r"no finished jobs.*1 left out") as caught:
        write_leaderboard(Board.load(tmp_path))
    assert str(bad) in str(caught.value)
    assert not (tmp_path / "leaderboard.md").exists()


# --- evidence: paired tests against scratch, bootstrap intervals, Friedman ---------------------


def _twelve(offset: float) -> list[float]:
    return [0.5 + 0.01 * i + offset for i in range(12)]


def _seeds(variant: str, seed_scores: tuple[float, ...], task: str = "lung") -> list[ResultRecord]:
    """One record per seed whose 12 test images all score that seed's value."""
    return [
        record(f"{variant}-{task}-{i}", variant, task, i, scores=[score] * 12) for i, score in enumerate(seed_scores)
    ]


def test_claims_take_seeds_as_replicates_not_test_images(tmp_path: Path) -> None:
    scratch = (0.50, 0.52, 0.54)
    cells = {"better": (0.60, 0.62, 0.64), "equal": scratch, "worse": (0.40, 0.42, 0.44), "lucky": (0.70, 0.45, 0.47)}
    records = _seeds("scratch", scratch) + [r for v, scores in cells.items() for r in _seeds(v, scores)]
    write_runs(tmp_path, records)
    summary = pd.read_csv(write_leaderboard(Board.load(tmp_path))[0])
    dice = summary[summary["metric"] == "dice"].set_index("variant")
    # One column per variant, so Holm has one p-value per family: the Welch p as scipy gives it.
    for variant, claim in (("better", "better"), ("worse", "worse"), ("lucky", "not distinguishable")):
        welch = sps.ttest_ind(cells[variant], scratch, equal_var=False)
        assert dice.loc[variant, "p_vs_scratch"] == pytest.approx(welch.pvalue)
        assert (dice.loc[variant, "diff_low"], dice.loc[variant, "diff_high"]) == pytest.approx(
            tuple(welch.confidence_interval(0.95))
        )
        assert dice.loc[variant, "claim_vs_scratch"] == claim
    assert dice.loc["better", "p_vs_scratch"] == pytest.approx(0.0036, abs=1e-4)  # t = 0.1 / 0.01633 = 6.12, 4 df
    assert dice.loc["better", "diff_vs_scratch"] == pytest.approx(0.1)
    assert dice.loc["equal", "p_vs_scratch"] == 1.0 and dice.loc["equal", "claim_vs_scratch"] == "not distinguishable"
    assert math.isnan(dice.loc["scratch", "p_vs_scratch"]) and pd.isna(dice.loc["scratch", "claim_vs_scratch"])
    table = first_table(protocol_section((tmp_path / "leaderboard.md").read_text(), "frozen"))
    cells_shown = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in table[2:]}
    assert cells_shown["better"].endswith("▲") and cells_shown["worse"].endswith("▼")
    # lucky beats scratch on every one of the 12 images in the mean over its seeds (0.54 against 0.52): counted as
    # replicates, images gave p = 2 / 2**12. Its seeds say one good run and two poor ones: no claim.
    for variant in ("equal", "lucky", "scratch"):
        assert "▲" not in cells_shown[variant] and "▼" not in cells_shown[variant]
    # Against the column's best ("better"): lucky's seeds overlap it (Welch p = 0.42), the others do not.
    assert cells_shown["lucky"].endswith("≈") and dice.loc["lucky", "claim_vs_best"] == "not distinguishable"
    assert dice.loc["lucky", "p_vs_best"] == pytest.approx(
        sps.ttest_ind(cells["lucky"], cells["better"], equal_var=False).pvalue
    )
    assert "≈" not in cells_shown["scratch"] + cells_shown["equal"] + cells_shown["worse"]


def test_rows_on_the_same_seeds_are_compared_pair_by_pair_and_others_by_welch(tmp_path: Path) -> None:
    # Each seed of simclr drew the random numbers of one of scratch's (common random numbers), in another order on
    # disk: the pairs are lined up by seed. simclr beats scratch by 0.03-0.05 in every pair while both move 0.15
    # between seeds.
    def seeds(variant: str, scores: dict[int, float]) -> list[ResultRecord]:
        return [
            record(f"{variant}-{s}", variant, seed_index=i, scores=[x] * 12, seed=s)
            for i, (s, x) in enumerate(scores.items())
        ]

    scratch = {11: 0.50, 22: 0.65, 33: 0.58}
    simclr = {33: 0.61, 11: 0.55, 22: 0.69}
    unpaired = dict(zip((44, 55, 66), simclr.values(), strict=True))  # the same scores, drawn on other seeds
    write_runs(tmp_path, seeds("scratch", scratch) + seeds("simclr", simclr) + seeds("other", unpaired))
    dice = pd.read_csv(write_leaderboard(Board.load(tmp_path))[0]).query("metric == 'dice'").set_index("variant")
    paired = sps.ttest_rel([simclr[s] for s in scratch], list(scratch.values()))  # d = 0.05, 0.04, 0.03: p 0.020
    assert dice.loc["simclr", "test_vs_scratch"] == "paired" and dice.loc["simclr", "claim_vs_scratch"] == "better"
    assert dice.loc["simclr", "p_vs_scratch"] == pytest.approx(paired.pvalue)
    assert (dice.loc["simclr", "diff_low"], dice.loc["simclr", "diff_high"]) == pytest.approx(
        tuple(paired.confidence_interval(0.95))
    )
    welch = sps.ttest_ind(list(unpaired.values()), list(scratch.values()), equal_var=False)
    assert (
        dice.loc["other", "test_vs_scratch"] == "welch"
        and dice.loc["other", "claim_vs_scratch"] == "not distinguishable"
    )
    assert dice.loc["other", "p_vs_scratch"] == pytest.approx(welch.pvalue)
    findings = (tmp_path / "leaderboard.md").read_text().split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    (claim,) = [line for line in findings.splitlines() if line.startswith("| simclr ▲")]
    assert claim.endswith("| paired |")
    # One seed of simclr run on other random numbers: no longer the same runs, so no pairs.
    mixed = summary_table(seeds("scratch", scratch) + seeds("simclr", {33: 0.61, 11: 0.55, 99: 0.69}))
    assert set(mixed.query("variant == 'simclr' and metric == 'dice'")["test_vs_scratch"]) == {"welch"}


def test_adding_unrelated_variants_leaves_a_claim_as_it_was() -> None:
    # Holm runs over each variant's own columns: twelve more variants (each with a p of its own) change neither
    # simclr's adjusted p nor its claim; a correction over the whole table would have multiplied it by up to 13.
    base = _seeds("scratch", (0.50, 0.52, 0.54)) + _seeds("simclr", (0.60, 0.63, 0.62))
    others = [r for k in range(12) for r in _seeds(f"m{k}", (0.50 + 0.01 * k, 0.53, 0.51))]

    def simclr(records: list[ResultRecord]) -> pd.Series:
        summary = summary_table(records)
        return summary[(summary["metric"] == "dice") & (summary["variant"] == "simclr")].iloc[0]

    alone, crowded = simclr(base), simclr(base + others)
    assert alone["p_vs_scratch"] == pytest.approx(
        sps.ttest_ind([0.60, 0.63, 0.62], [0.50, 0.52, 0.54], equal_var=False).pvalue
    )
    assert crowded["p_vs_scratch"] == alone["p_vs_scratch"] and crowded["claim_vs_scratch"] == "better"


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_the_board_wide_q_is_benjamini_hochberg_over_every_headline_comparison_with_scratch(
    tmp_path: Path, n_seeds: int
) -> None:
    # Three variants against scratch in two tasks under two protocols, effects of several sizes: the reference is
    # scipy's Welch p-values of the per-seed Dice, then scipy's Benjamini-Hochberg over all twelve together. At 3
    # seeds simclr's claims (Holm p 0.02-0.04) do not hold board-wide (q 0.07-0.10); at 5 they do.
    rng = np.random.default_rng(5)
    effects = {"scratch": 0.0, "simclr": 0.08, "byol": 0.03, "moco": 0.0}
    columns = [(task, protocol) for task in ("lung", "vessel") for protocol in ("frozen", "linear-seg")]
    scores = {(v, *c): 0.5 + gain + rng.normal(0, 0.02, n_seeds) for v, gain in effects.items() for c in columns}
    records = [
        record(f"{v}-{task}-{protocol}-{i}", v, task=task, seed_index=i, scores=[x] * 12, protocol=protocol)
        for (v, task, protocol), seeds in scores.items()
        for i, x in enumerate(seeds)
    ]
    write_runs(tmp_path, records)
    summary = pd.read_csv(write_leaderboard(Board.load(tmp_path))[0])
    compared = [key for key in scores if key[0] != "scratch"]
    welch = [sps.ttest_ind(scores[key], scores[("scratch", *key[1:])], equal_var=False).pvalue for key in compared]
    expected = dict(zip(compared, sps.false_discovery_control(welch), strict=True))
    dice = summary.query("metric == 'dice' and variant != 'scratch'").set_index(["variant", "task", "protocol"])
    assert dice["q_vs_scratch"].to_dict() == pytest.approx(expected)
    assert summary.query("metric == 'iou' or variant == 'scratch'")["q_vs_scratch"].isna().all()
    claims = dice[dice["claim_vs_scratch"].isin(["better", "worse"])]
    holding = sum(expected[key] < 0.05 for key in claims.index)
    assert len(claims) >= 4 and holding == (len(claims) if n_seeds == 5 else 0)
    findings = (tmp_path / "leaderboard.md").read_text().split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert (
        f"{holding} of the {len(claims)} claim(s) against scratch hold at a 5% false discovery rate over all 12 "
        "headline comparisons with scratch on this board"
    ) in findings
    claim = next(line for line in findings.splitlines() if line.startswith("| simclr ▲ | lung |"))  # frozen first
    assert f"| {expected[('simclr', 'lung', 'frozen')]:.2g} | welch |" in claim


def test_one_seed_claims_nothing_and_says_so(tmp_path: Path) -> None:
    records = [record("s", "scratch", scores=[0.5] * 12), record("b", "better", scores=[0.9] * 12)]
    markdown = markdown_of(tmp_path, records)
    table = protocol_section(markdown, "frozen")
    assert "▲" not in first_table(table)[2] and "**Too few seeds to claim:** at most 1 seed(s) per cell" in table
    findings = markdown.split("## Findings\n", 1)[1].split("\n## ", 1)[0]
    assert "**Too few seeds to claim anything** against `scratch`: 1 seed(s) per cell, a claim needs 3" in findings
    summary = pd.read_csv(tmp_path / "leaderboard.csv").query("metric == 'dice'").set_index("variant")
    assert summary.loc["better", "claim_vs_scratch"] == "too few seeds" and math.isnan(
        summary.loc["better", "p_vs_scratch"]
    )


def test_a_checkpoint_loaded_by_every_seed_is_one_draw_of_an_encoder(tmp_path: Path) -> None:
    # scratch redraws its random encoder with every seed (0.30 to 0.50); the "checkpoint" loads one random encoder
    # in every seed, so its seeds only redraw the head (0.41, 0.42, 0.41). Welch would call 0.413 against 0.40 with
    # tight seeds a finding; as one draw of an encoder it sits inside scratch's spread.
    scratch = _seeds("scratch", (0.30, 0.40, 0.50))
    checkpoint = [dataclasses.replace(r, encoder_digest="e" * 64) for r in _seeds("checkpoint", (0.41, 0.42, 0.41))]
    write_runs(tmp_path, scratch + checkpoint)
    row = (
        pd.read_csv(write_leaderboard(Board.load(tmp_path))[0])
        .query("metric == 'dice'")
        .set_index("variant")
        .loc["checkpoint"]
    )
    assert bool(row["single_encoder"])
    se = 0.1 * math.sqrt(1 + 1 / 3)  # scratch's sd 0.1, one new draw
    assert row["p_vs_scratch"] == pytest.approx(2 * sps.t.sf((0.4133333 - 0.4) / se, 2), rel=1e-4)
    assert row["claim_vs_scratch"] == "not distinguishable"


def test_the_bootstrap_interval_of_a_cell_surrounds_its_mean_and_is_stratified_by_seed(tmp_path: Path) -> None:
    records = [record("a", seed_index=0, scores=_twelve(0.0)), record("b", seed_index=1, scores=_twelve(0.2))]
    write_runs(tmp_path, records)
    row = pd.read_csv(write_leaderboard(Board.load(tmp_path))[0]).query("metric == 'dice'").iloc[0]
    # The mean of the seeds' means is (0.555 + 0.755) / 2 = 0.655. Resampling within each seed keeps their gap:
    # each seed mean has SE 0.0345 / sqrt(12) = 0.00996 (sd of 12 values 0.01 apart), the cell sqrt(2) / 2 of that,
    # 0.0070, so the 95% width is about 4 * 0.0070 = 0.028; pooling the 24 images (sd 0.105) would give ~0.084.
    assert row["mean"] == pytest.approx(0.655)
    assert row["image_low"] < row["mean"] < row["image_high"]
    assert row["image_high"] - row["image_low"] < 0.035


def test_friedman_is_reported_from_five_complete_columns_and_called_uninformative_below(tmp_path: Path) -> None:
    tasks = ["t1", "t2", "t3", "t4", "t5"]
    records = [
        record(f"{v}{t}", v, task=t, scores=[base + 0.01 * i] * 4)
        for v, base in (("a", 0.8), ("b", 0.6), ("c", 0.4))
        for i, t in enumerate(tasks)
    ]
    markdown = markdown_of(tmp_path / "five", records)
    # a always ranks 1, b 2, c 3 on 5 tasks: chi-square = 12 N / (k (k + 1)) * sum(R^2) - 3 N (k + 1)
    #   = 12 * 5 / 12 * (1 + 4 + 9) - 3 * 5 * 4 = 70 - 60 = 10; CD = 2.343 * sqrt(3 * 4 / 30) = 1.48.
    assert "Friedman test over 5 columns of 3 variants: chi-square 10.00, p = 0.00674" in markdown
    assert "Nemenyi critical difference 1.48" in markdown
    few = markdown_of(tmp_path / "four", [r for r in records if r.task != "t5"])
    assert "Friedman test over 4 column(s) of 3 variants: not informative below 5 columns" in few


def test_the_aggregate_table_gives_the_iqm_of_scratch_normalised_scores_and_the_chance_to_beat_scratch(tmp_path):
    # Four tasks; scratch scores 0.5 on each. Method m: 0.75, 0.5, 0.9, 0.6 -> normalised (s - 0.5) / 0.5 =
    # 0.5, 0.0, 0.8, 0.2; the IQM (trim 25% each side of 4 values: the middle two, 0.2 and 0.5) is 0.35.
    # m beats scratch on 3 tasks and ties on one: P = (3 + 0.5) / 4 = 0.875.
    m_scores = {"t1": 0.75, "t2": 0.5, "t3": 0.9, "t4": 0.6}
    records = [record(f"s{t}{i}", "scratch", task=t, seed_index=i, scores=[0.5] * 3) for t in m_scores for i in (0, 1)]
    records += [
        record(f"m{t}{i}", "m", task=t, seed_index=i, scores=[v] * 3) for t, v in m_scores.items() for i in (0, 1)
    ]
    markdown = markdown_of(tmp_path, records)
    section = protocol_section(markdown, "frozen")

    # Both seeds of a cell score alike, so no resample of the seeds moves the IQM: its interval is the point. The
    # chance's score interval solves (|0.875 - p| - 1/32)^2 = z^2 V(p): four columns of 2 seeds a side give
    # V(p) = (1/16) 4 p(1-p)/4 (Hanley-McNeil with k = 1), and 1/32 is half the step of a mean of 4 columns of 4 pairs.
    def gap(p: float) -> float:
        return (abs(0.875 - p) - 1 / 32) ** 2 - sps.norm.ppf(0.975) ** 2 * p * (1 - p) / 16

    low, high = optimize.brentq(gap, 0.3, 0.84), optimize.brentq(gap, 0.91, 0.9999)
    assert f"| m | 0.350 | [0.350, 0.350] | 0.88 | [{low:.2f}, {high:.2f}] |" in section
    header = "| variant | IQM vs scratch | IQM 95% interval | P(beats scratch) | P 95% interval |"
    assert header in section
    # Four columns and two variants: a matrix of chances would say nothing the row above does not.
    assert "| beats → |" not in section


def test_the_matrix_of_chances_needs_five_columns_and_three_variants(tmp_path: Path) -> None:
    tasks = ["t1", "t2", "t3", "t4", "t5"]
    # a beats b on t1-t4 and loses on t5: P(a beats b) = 4/5; c loses to both everywhere.
    values = {"a": [0.9, 0.9, 0.9, 0.9, 0.1], "b": [0.5] * 5, "c": [0.05] * 5}
    records = [
        record(f"{v}{t}", v, task=t, scores=[x] * 2) for v, xs in values.items() for t, x in zip(tasks, xs, strict=True)
    ]
    section = protocol_section(markdown_of(tmp_path / "five", records), "frozen")
    assert "| beats → | a | b | c |" in section
    assert "| a |  | 0.80 | 1.00 |" in section and "| b | 0.20 |  | 1.00 |" in section
    four = protocol_section(markdown_of(tmp_path / "four", [r for r in records if r.task != "t5"]), "frozen")
    assert "| beats → |" not in four


def test_a_failed_seed_lands_in_the_row_of_its_own_pool(tmp_path: Path) -> None:
    # simclr on lung with two pools (a pool whose content changed): seed 1 of the new pool failed. The failure
    # is named by the same rule as the records, so it counts in the new pool's row and makes no row of its own.
    new_pool = PoolRecord("fundus", "bbbbbbbb" + "2" * 56)
    records = [
        record("old0", "simclr", seed_index=0, scores=[0.5]),
        record("new0", "simclr", seed_index=0, scores=[0.7], pool=new_pool),
    ]
    pool = {"id": new_pool.id, "fingerprint": new_pool.fingerprint}
    failure = _failure("new1", "simclr", seed_index=1, spec={"pretraining": {"pool": pool}})
    summary = Board(tmp_path, records, failures=[failure]).summary
    dice = summary[summary["metric"].isin(["dice", ""])].set_index("variant")
    assert sorted(dice.index) == ["simclr {fundus:aaaaaaaa}", "simclr {fundus:bbbbbbbb}"]
    assert (
        dice.loc["simclr {fundus:bbbbbbbb}", "n_failed"] == 1 and dice.loc["simclr {fundus:aaaaaaaa}", "n_failed"] == 0
    )


def _failure(job_id: str, variant: str, *, seed_index: int = 0, spec: dict | None = None) -> FailureRecord:
    """A job of ``variant`` on lung under frozen that failed in its protocol."""
    return FailureRecord(
        job_id=job_id,
        variant=variant,
        task="lung",
        protocol="frozen",
        label_fraction=1.0,
        seed_index=seed_index,
        budget="paper",
        phase="protocol",
        error="RuntimeError: out of memory",
        traceback="",
        spec=spec or {},
        host="h",
        pid=1,
        unix_time=2000.0,
    )


def _findings(board: Board) -> str:
    return render_markdown(board).split("## Findings\n", 1)[1].split("\n## ", 1)[0]


def test_a_cell_whose_every_seed_failed_does_not_change_what_the_findings_say(tmp_path: Path) -> None:
    records = [record("s", "scratch", scores=[0.5] * 12), record("b", "better", scores=[0.9] * 12)]
    board = Board(tmp_path, records, failures=[_failure("m", "moco")])
    assert "**Too few seeds to claim anything** against `scratch`: 1 seed(s) per cell" in _findings(board)
    # A pretrained method that failed is not described as one without pretraining.
    frozen = render_markdown(board).split("## `frozen`", 1)[1]
    (random_encoders,) = [line for line in frozen.splitlines() if ": no pretraining, so" in line]
    assert "| moco | failed |" in frozen and random_encoders.startswith("`scratch`: no pretraining")


def test_findings_say_which_cells_had_too_few_seeds_beside_those_not_distinguishable(tmp_path: Path) -> None:
    records = _seeds("scratch", (0.50, 0.52, 0.54)) + _seeds("near", (0.51, 0.53, 0.55))
    records.append(record("one", "single", scores=[0.9] * 12))
    findings = _findings(Board(tmp_path, records))
    assert "**No variant is distinguishable from `scratch`** in any column it can be compared in (1 to 3 seed(s)" in (
        findings
    )
    assert "; 1 cell(s) have too few seeds to claim)" in findings
    # The table marks the cell short of seeds, not "near", which is compared with scratch on 3 seeds a side (its
    # comparison with the column's best, "single", has no claim for want of single's seeds).
    table = first_table(protocol_section(render_markdown(Board(tmp_path, records)), "frozen"))
    shown = {line.split(" | ")[0].strip("| "): line.split(" | ")[1] for line in table[2:]}
    assert "(too few seeds to claim)" in shown["single"]
    assert "too few" not in shown["near"] and "too few" not in shown["scratch"]


def test_with_several_encoders_each_row_is_normalised_by_the_scratch_of_its_encoder(tmp_path):
    # resnet18 (the records' default): scratch 0.5, m as above -> IQM 0.350. vit: scratch@vit 0.6 and m@vit 0.8 on
    # every task -> (0.8 - 0.6) / (1 - 0.6) = 0.5 (against resnet18's scratch it would be 0.6).
    m_scores = {"t1": 0.75, "t2": 0.5, "t3": 0.9, "t4": 0.6}
    records = [record(f"s{t}{i}", "scratch", task=t, seed_index=i, scores=[0.5] * 3) for t in m_scores for i in (0, 1)]
    records += [
        record(f"m{t}{i}", "m", task=t, seed_index=i, scores=[v] * 3) for t, v in m_scores.items() for i in (0, 1)
    ]
    for variant, method, score in (("scratch@vit", "scratch", 0.6), ("m@vit", "m", 0.8)):
        records += [
            dataclasses.replace(
                record(f"{variant}{t}{i}", variant, task=t, seed_index=i, scores=[score] * 3),
                method=method,
                encoder="vit",
                pretrained=method != "scratch",
            )
            for t in m_scores
            for i in (0, 1)
        ]
    section = protocol_section(markdown_of(tmp_path, records), "frozen").splitlines()
    start = section.index("| variant | IQM vs scratch | IQM 95% interval | P(beats scratch) | P 95% interval |")
    rows = list(itertools.takewhile(lambda line: line.startswith("|"), section[start + 2 :]))
    assert sorted(row.split(" | ")[:2] for row in rows) == [["| m", "0.350"], ["| m@vit", "0.500"]]
    assert any("each row against the scratch of its encoder" in line for line in section)
