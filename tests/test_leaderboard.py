"""Leaderboards from result files: every expected number below is worked out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.errors import DataError
from ssl_bench.leaderboard import (
    load_results,
    ranks,
    render_markdown,
    seed_table,
    summary_table,
    write_leaderboard,
)

T_975_DF1 = 12.7062047  # Student t quantile 0.975 with 1 degree of freedom, from tables
DEFAULT_COMPUTE = {
    "pretrain_seconds": 10.0,
    "transfer_seconds": 20.0,
    "pretrain_images_per_second": 50.0,
    "peak_memory_mb": 800.0,
    "device": "cpu",
}


def result(
    job: str,
    variant: str,
    task: str,
    seed: int,
    frozen: list[float],
    finetune: list[float] | None = None,
    fraction: float = 1.0,
    profile: str = "paper",
    compute: dict | None = None,
) -> dict:
    """A schema-1 result whose dice and iou (iou = dice / 2) hold the given per-image scores.

    ``compute`` overrides entries of ``DEFAULT_COMPUTE``.
    """

    def scores(values: list[float]) -> dict:
        ids = [f"img{i}" for i in range(len(values))]
        return {
            "dice": {"per_image": values, "ids": ids},
            "iou": {"per_image": [v / 2 for v in values], "ids": ids},
        }

    return {
        "schema_version": 1,
        "job_id": job,
        "variant": variant,
        "method": variant.split("(")[0],
        "task": task,
        "label_fraction": fraction,
        "seed_index": seed,
        "profile": profile,
        "metrics": {"frozen": scores(frozen), "finetune": scores(finetune or frozen)},
        "compute": {**DEFAULT_COMPUTE, **(compute or {})},
        "config_hash": "ignored",
    }


def write_runs(results_dir: Path, results: list[dict]) -> None:
    for res in results:
        folder = results_dir / "runs" / res["job_id"]
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(res))


def row(table: pd.DataFrame, **keys: object) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    for column, value in keys.items():
        mask &= table[column] == value
    assert mask.sum() == 1, f"expected one row for {keys}, found {mask.sum()}"
    return table[mask].iloc[0]


NO_RATE = {"pretrain_images_per_second": None}
SCRATCH = {"pretrain_seconds": None, "pretrain_images_per_second": None}


def two_seed_results() -> list[dict]:
    return [
        result(
            "j0",
            "simclr",
            "vessel",
            0,
            [0.5, 0.7],
            compute={"pretrain_seconds": 10.0, "transfer_seconds": 30.0, "peak_memory_mb": None} | NO_RATE,
        ),
        result(
            "j1",
            "simclr",
            "vessel",
            1,
            [0.6, 0.8],
            compute={"pretrain_seconds": 14.0, "transfer_seconds": 31.0, "peak_memory_mb": 900.0} | NO_RATE,
        ),
        result("j2", "scratch", "vessel", 0, [0.2, 0.4, 0.9], compute=SCRATCH),
    ]


# --- per-seed and summary statistics ---------------------------------------------------------


def test_seed_table_mean_and_population_std_over_images() -> None:
    seeds = seed_table(two_seed_results())
    scratch = row(seeds, variant="scratch", regime="frozen", metric="dice", seed_index=0)
    # [0.2, 0.4, 0.9]: mean 0.5; deviations -0.3, -0.1, 0.4 -> sqrt(0.26 / 3) with ddof 0
    assert scratch["score"] == pytest.approx(0.5)
    assert scratch["image_std"] == pytest.approx(math.sqrt(0.26 / 3))
    assert scratch["n_images"] == 3
    assert scratch["profile"] == "paper"
    assert math.isnan(scratch["pretrain_seconds"])
    iou = row(seeds, variant="scratch", regime="finetune", metric="iou", seed_index=0)
    assert iou["score"] == pytest.approx(0.25)
    # 2 variants/seeds -> 3 results x 2 regimes x 2 metrics
    assert len(seeds) == 12


def test_summary_mean_std_ci_and_image_std_over_seeds() -> None:
    summary = summary_table(two_seed_results())
    simclr = row(summary, variant="simclr", task="vessel", regime="frozen", metric="dice")
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


def test_summary_compute_is_mean_over_the_seeds_that_recorded_it() -> None:
    summary = summary_table(two_seed_results())
    simclr = row(summary, variant="simclr", regime="finetune", metric="iou")
    assert simclr["pretrain_seconds"] == pytest.approx(12.0)  # (10 + 14) / 2
    assert simclr["transfer_seconds"] == pytest.approx(30.5)  # (30 + 31) / 2
    assert simclr["peak_memory_mb"] == pytest.approx(900.0)  # one seed unmeasured
    assert math.isnan(simclr["pretrain_images_per_second"])  # never recorded
    scratch = row(summary, variant="scratch", regime="frozen", metric="dice")
    assert math.isnan(scratch["pretrain_seconds"])


def test_summary_leaves_std_and_ci_blank_for_one_seed() -> None:
    scratch = row(summary_table(two_seed_results()), variant="scratch", regime="frozen", metric="dice")
    assert scratch["n_seeds"] == 1
    assert scratch["mean"] == pytest.approx(0.5)
    assert math.isnan(scratch["std"])
    assert math.isnan(scratch["ci95_low"])
    assert math.isnan(scratch["ci95_high"])


def test_summary_has_one_row_per_variant_task_regime_fraction_metric() -> None:
    results = [
        result("a", "simclr", "lung", 0, [0.5]),
        result("b", "simclr", "lung", 0, [0.3], fraction=0.2),
        result("c", "simclr", "lung", 1, [0.4], fraction=0.2),
    ]
    summary = summary_table(results)
    assert len(summary) == 2 * 2 * 2  # 2 fractions x 2 regimes x 2 metrics
    low = row(summary, label_fraction=0.2, regime="frozen", metric="dice")
    assert low["n_seeds"] == 2
    assert low["mean"] == pytest.approx(0.35)


def test_of_two_files_for_the_same_run_only_the_newest_counts() -> None:
    old = {**result("old", "simclr", "lung", 0, [0.5]), "unix_time": 100.0}
    new = {**result("new", "simclr", "lung", 0, [0.6]), "unix_time": 200.0}
    for results in ([old, new], [new, old]):
        seeds = seed_table(results)
        dice = row(seeds, regime="frozen", metric="dice")
        assert (dice["job_id"], dice["score"]) == ("new", 0.6)


def test_results_of_two_profiles_are_told_apart_by_label() -> None:
    results = [result("d", "simclr", "lung", 0, [0.5], profile="demo"), result("p", "simclr", "lung", 0, [0.7])]
    summary = summary_table(results)
    assert row(summary, variant="simclr [demo]", regime="frozen", metric="dice")["mean"] == 0.5
    assert row(summary, variant="simclr [paper]", regime="frozen", metric="dice")["mean"] == 0.7


def test_a_set_level_metric_is_a_headline_without_image_std() -> None:
    auc_result = result("c", "simclr", "pneumonia", 0, [0.5])
    auc_result["headline_metric"] = "auc"
    auc_result["metrics"] = {"frozen": {"auc": {"value": 0.9, "n_images": 624}, "acc": {"per_image": [1, 0, 1, 1]}}}
    summary = summary_table([auc_result])
    auc = row(summary, metric="auc")
    assert (auc["mean"], bool(auc["headline"]), math.isnan(auc["image_std"])) == (0.9, True, True)
    acc = row(summary, metric="acc")
    assert (acc["mean"], bool(acc["headline"])) == (0.75, False)
    markdown = render_markdown(summary, {"paper"})
    assert "| simclr | **0.900** | 1.00 | 1 |" in markdown and "### Frozen encoder: acc" in markdown


# --- ranks -------------------------------------------------------------------------------------


def ranking_results() -> list[dict]:
    # t1: a 0.8, b 0.8, c 0.6 -> ranks a 1.5, b 1.5, c 3 (a and b both win)
    # t2: a 0.5, b 0.7, c 0.9 -> ranks a 3, b 2, c 1
    # t3: only a and b -> excluded; counted, it would give a a second win
    return [
        result("1", "a", "t1", 0, [0.8]),
        result("2", "b", "t1", 0, [0.8]),
        result("3", "c", "t1", 0, [0.6]),
        result("4", "a", "t2", 0, [0.5]),
        result("5", "b", "t2", 0, [0.7]),
        result("6", "c", "t2", 0, [0.9]),
        result("7", "a", "t3", 0, [0.9]),
        result("8", "b", "t3", 0, [0.1]),
    ]


def test_ranks_average_ties_and_skip_columns_a_variant_lacks() -> None:
    frozen = summary_table(ranking_results()).query("regime == 'frozen'")
    table = ranks(frozen)
    assert list(table["variant"]) == ["b", "c", "a"]
    by_variant = table.set_index("variant")
    assert by_variant.at["a", "mean_rank"] == pytest.approx((1.5 + 3) / 2)
    assert by_variant.at["b", "mean_rank"] == pytest.approx((1.5 + 2) / 2)
    assert by_variant.at["c", "mean_rank"] == pytest.approx((3 + 1) / 2)
    assert by_variant["wins"].to_dict() == {"a": 1, "b": 1, "c": 1}
    assert set(by_variant["n_columns"]) == {2}


def test_ranks_count_each_regime_as_its_own_columns() -> None:
    # frozen: x 0.9 > y 0.1; finetune: x 0.2 < y 0.4 -> ranks 1+2 each, one win each
    results = [
        result("1", "x", "t", 0, [0.9], finetune=[0.2]),
        result("2", "y", "t", 0, [0.1], finetune=[0.4]),
    ]
    by_variant = ranks(summary_table(results)).set_index("variant")
    assert by_variant.at["x", "mean_rank"] == pytest.approx(1.5)
    assert by_variant.at["y", "mean_rank"] == pytest.approx(1.5)
    assert by_variant["wins"].to_dict() == {"x": 1, "y": 1}
    assert by_variant.at["x", "n_columns"] == 2


def test_ranks_treat_means_equal_up_to_rounding_as_ties() -> None:
    # seed scores 0.1, 0.2, 0.3 in two orders: both mean 0.2, but the float sums come out
    # as 0.20000000000000004 and 0.19999999999999998
    p = [result(f"p{seed}", "p", "t", seed, [score]) for seed, score in enumerate([0.1, 0.2, 0.3])]
    q = [result(f"q{seed}", "q", "t", seed, [score]) for seed, score in enumerate([0.3, 0.2, 0.1])]
    results = p + q
    summary = summary_table(results)
    means = summary.query("metric == 'dice' and regime == 'frozen'").set_index("variant")["mean"]
    assert means["p"] == pytest.approx(0.2) and means["q"] == pytest.approx(0.2)
    by_variant = ranks(summary).set_index("variant")
    assert by_variant["mean_rank"].to_dict() == {"p": 1.5, "q": 1.5}
    assert by_variant["wins"].to_dict() == {"p": 2, "q": 2}


def test_ranks_use_the_requested_metric() -> None:
    # iou of result() is dice / 2, so the order is the same but the metric filter must apply
    table = ranks(summary_table(ranking_results()), metric="iou")
    assert list(table["variant"]) == ["b", "c", "a"]
    assert ranks(summary_table(ranking_results()), metric="hausdorff").empty


# --- markdown ----------------------------------------------------------------------------------


def markdown_results(profile: str) -> list[dict]:
    return [
        result("1", "simclr", "lung", 0, [0.70], profile=profile),
        result("2", "simclr", "lung", 1, [0.72], profile=profile),
        result("3", "scratch", "lung", 0, [0.60], profile=profile, compute=SCRATCH),
        result("4", "simclr", "lung", 0, [0.40], fraction=0.2, profile=profile),
        result("5", "scratch", "lung", 0, [0.45], fraction=0.2, profile=profile, compute=SCRATCH),
    ]


def regime_table(markdown: str, regime: str) -> list[str]:
    """The lines of the headline (dice) table under the regime's heading."""
    section = markdown.split(f"(`{regime}`)", 1)[1]
    lines = section.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("| variant"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def test_markdown_bolds_best_and_shows_mean_std_ranks_and_wins() -> None:
    markdown = render_markdown(summary_table(markdown_results("paper")), {"paper"})
    header, _, first, second = regime_table(markdown, "frozen")
    assert header == "| variant | lung | lung@0.2 | mean rank | wins |"
    # lung: simclr 0.71 ± std(0.70, 0.72) = 0.01414 beats scratch 0.60;
    # lung@0.2: scratch 0.45 beats simclr 0.40 -> both mean rank 1.5, 1 win; ties sort by name
    assert first == "| scratch | 0.600 | **0.450** | 1.50 | 1 |"
    assert second == "| simclr | **0.710 ± 0.014** | 0.400 | 1.50 | 1 |"
    assert "## Compute" in markdown
    assert "| scratch |  |  | 20.0 | 800 |" in markdown  # no pretraining: blank, not 0
    assert "| simclr | 10.0 | 50.0 | 20.0 | 800 |" in markdown


def test_markdown_bolds_every_tied_best_and_orders_rows_by_rank() -> None:
    frozen_rows = regime_table(render_markdown(summary_table(ranking_results()), {"paper"}), "frozen")
    assert frozen_rows[2:] == [
        "| b | **0.800** | 0.700 | 0.100 | 1.75 | 1 |",
        "| c | 0.600 | **0.900** | – | 2.00 | 1 |",
        "| a | **0.800** | 0.500 | **0.900** | 2.25 | 1 |",
    ]


def test_markdown_warns_about_demo_results_only() -> None:
    demo = render_markdown(summary_table(markdown_results("demo")), {"demo"})
    paper = render_markdown(summary_table(markdown_results("paper")), {"paper"})
    title, blank, banner = demo.split("\n")[:3]
    assert title.startswith("# ")
    assert blank == ""
    assert "smoke test" in banner.lower() and "demo" in banner
    assert "smoke test" not in paper.lower()
    assert "(`finetune`)" in paper and "(`frozen`)" in paper
    assert "ddof=1" in paper and "95% CI" in paper and "image_std" in paper


def test_markdown_escapes_pipes_in_variant_labels() -> None:
    markdown = render_markdown(summary_table([result("1", "mix(a|b)", "t", 0, [0.5])]), {"paper"})
    assert "| mix(a\\|b) | **0.500** | 1.00 | 1 |" in markdown


# --- files ----------------------------------------------------------------------------------------


def test_write_leaderboard_writes_three_files_and_a_readable_csv(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_results())
    (tmp_path / "runs" / "unfinished").mkdir()  # a job still running: no result.json yet
    csv_path, md_path, png_path = write_leaderboard(tmp_path)
    assert (csv_path, md_path, png_path) == (
        tmp_path / "leaderboard.csv",
        tmp_path / "leaderboard.md",
        tmp_path / "leaderboard.png",
    )
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md_path.read_text().startswith("# ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "leaderboard.csv",
        "leaderboard.md",
        "leaderboard.png",
        "runs",
    ]
    table = pd.read_csv(csv_path)
    for column in ["variant", "task", "regime", "label_fraction", "metric", "n_seeds", "mean", "std"]:
        assert column in table.columns
    for column in ["ci95_low", "ci95_high", "image_std", "pretrain_seconds", "transfer_seconds"]:
        assert column in table.columns
    assert {"pretrain_images_per_second", "peak_memory_mb"} <= set(table.columns)
    assert len(table) == 2 * 2 * 2  # 2 variants x 2 regimes x 2 metrics
    simclr = row(table, variant="simclr", regime="frozen", metric="dice")
    assert simclr["mean"] == pytest.approx(0.65)
    assert simclr["ci95_high"] == pytest.approx(0.65 + 0.6353102, abs=1e-6)
    scratch = row(table, variant="scratch", regime="frozen", metric="dice")
    assert math.isnan(scratch["ci95_low"]) and math.isnan(scratch["std"])


def test_write_leaderboard_replaces_an_old_leaderboard(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_results())
    (tmp_path / "leaderboard.md").write_text("stale")
    _, md_path, _ = write_leaderboard(tmp_path)
    assert "stale" not in md_path.read_text()


def test_corrupt_result_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    write_runs(tmp_path, two_seed_results())
    bad = tmp_path / "runs" / "j1" / "result.json"
    bad.write_text('{"schema_version": 1, "job_id": ')
    with pytest.raises(DataError) as caught:
        load_results(tmp_path)
    assert str(bad) in str(caught.value)
    assert "delete" in str(caught.value) and "rerun" in str(caught.value)


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    future = result("j9", "simclr", "lung", 0, [0.5]) | {"schema_version": 2}
    write_runs(tmp_path, [future])
    with pytest.raises(DataError, match=r"j9.*schema_version 2"):
        load_results(tmp_path)


def test_no_results_is_an_actionable_error(tmp_path: Path) -> None:
    (tmp_path / "runs" / "unfinished").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no finished jobs.*run the benchmark"):
        write_leaderboard(tmp_path)
    assert not (tmp_path / "leaderboard.csv").exists()
