"""Budgets: one compute budget for every method, named and resolved from a run file, part of each pretraining's id."""

from pathlib import Path

import pytest
from records import record, write_runs
from test_method import TwoStages

from ssl_bench.board import Board, write_leaderboard, write_report
from ssl_bench.budget import BUILT_IN, Budget, resolve_budget
from ssl_bench.config import read_config_file, resolve_config
from ssl_bench.errors import ConfigError
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry


def steps(stages) -> list[int]:
    return [stage.epochs * stage.steps_per_epoch for stage in stages]


def test_matched_gives_every_method_lds_budget_in_its_paper_stages_proportions():
    a, b = BUILT_IN["matched"].stages(TwoStages())
    # Paper steps: a 1000, b 3000 -> shares 1/4 and 3/4 of 100,000 steps, in epochs of 1000 steps.
    assert (a.epochs, a.steps_per_epoch, b.epochs, b.steps_per_epoch) == (25, 1000, 75, 1000)
    assert a.batch_size == b.batch_size == 8
    assert (a.image_size, a.lr, b.image_size, b.lr) == (448, 1e-3, 224, 1e-4)


def test_demo_and_paper_run_each_methods_own_stages():
    assert BUILT_IN["demo"].stages(TwoStages()) == tuple(TwoStages().stages("demo"))
    assert BUILT_IN["paper"].stages(TwoStages()) == tuple(TwoStages().stages("paper"))


def test_a_small_budget_keeps_the_shares_learning_rates_and_size_ratios():
    budget = Budget("cpu", steps=2000, images_per_step=16, image_size=64)
    a, b = budget.stages(TwoStages())
    # 500 and 1500 steps; a stage shorter than an epoch of 1000 steps is one epoch, 1500 steps are two of 750.
    assert steps((a, b)) == [500, 1500] and (a.epochs, b.epochs) == (1, 2)
    assert (a.batch_size, b.batch_size) == (16, 16)
    # The largest stage (448 px) runs at the budget's 64 px; the 224-px stage keeps half of it.
    assert (a.image_size, b.image_size) == (64, 32)
    assert (a.lr, b.lr) == (1e-3, 1e-4)


def test_validation_every_so_many_steps_and_a_method_without_pretraining():
    budget = Budget("cpu", steps=600, steps_per_epoch=100)
    # 150 and 450 steps: epochs of about 100 steps that divide them exactly (2 of 75; 450 = 5 x 90, 4.5 is no count).
    assert [(stage.epochs, stage.steps_per_epoch) for stage in budget.stages(TwoStages())] == [(2, 75), (5, 90)]
    # A prime number of steps is one epoch; the stages' steps always add up to the budget's.
    assert steps(Budget("odd", steps=1009).stages(TwoStages())) == [252, 757]
    assert budget.stages(get_registry().method("scratch")()) == ()


def test_a_budget_table_changes_a_built_in_and_is_named_by_what_it_changes():
    assert resolve_budget("matched") is BUILT_IN["matched"]
    derived = resolve_budget({"steps": 600, "image_size": 64})
    assert derived == Budget("paper(steps=600, image_size=64)", steps=600, image_size=64)
    named = resolve_budget({"name": "cpu-600", "based_on": "matched", "steps": 600})
    assert (named.name, named.steps, named.images_per_step) == ("cpu-600", 600, 8)
    assert resolve_budget({"based_on": "demo", "downstream_epochs": 2}).scale == "demo"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("huge", r"budget must be one of demo, paper, matched or a \[budget\] table"),
        (3, r'budget must be a name, e.g. budget = "matched"'),
        ({"step": 600}, r"\[budget\] has no field step; its fields: name, based_on, downstream_epochs"),
        ({"steps": 0}, r"steps of budget 'paper\(steps=0\)' must be a whole number >= 1; got 0"),
        ({"steps": 60.5}, r"steps of budget .* must be a whole number >= 1; got 60.5"),
        ({"image_size": 64}, r"sets images_per_step or image_size without steps"),
        ({"downstream_image_size": 8}, r"downstream_image_size .* must be a whole number >= 16"),
        ({"scale": "big"}, r"scale must be one of demo, paper; got 'big'"),
        ({"name": "matched", "steps": 10}, r"named 'matched', as a built-in budget it differs from"),
        ({"name": ""}, r"name of \[budget\] must be a non-empty string"),
    ],
)
def test_a_bad_budget_is_refused_with_what_to_write(value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_budget(value)


def test_the_run_file_takes_a_budget_table_and_the_resolved_file_reads_back_the_same(tmp_path: Path):
    registry = get_registry()
    file_values = {"methods": ["simclr"], "budget": {"name": "cpu", "steps": 300, "downstream_epochs": 2}}
    config = resolve_config(file_values, {"results": str(tmp_path)}, registry)
    assert config.budget == Budget("cpu", steps=300, downstream_epochs=2)
    saved = tmp_path / "run-config.toml"
    saved.write_text(config.to_toml())
    assert resolve_config(read_config_file(saved), {}, registry) == config
    built_in = resolve_config({"methods": ["simclr"], "budget": "matched"}, {"results": str(tmp_path)}, registry)
    assert 'budget = "matched"' in built_in.to_toml()
    with pytest.raises(ConfigError, match=r'profile is now budget: write budget = "paper"'):
        resolve_config({"profile": "paper"}, {}, registry)


def test_the_resolved_stages_name_the_encoder_and_a_downstream_change_keeps_it(tmp_path: Path):
    def plan(budget):
        values = {"methods": ["simclr", "scratch"], "tasks": ["synthetic-vessel"], "protocols": ["frozen"]}
        config = resolve_config({**values, "budget": budget}, {"results": str(tmp_path)}, get_registry())
        return {job.pretraining.method.name: job for job in build_plan(config, get_registry(), echo=print).jobs}

    small = plan({"steps": 40, "images_per_step": 4, "image_size": 64})
    assert small["simclr"].pretraining.spec["stages"] == [
        {"name": "simclr", "epochs": 1, "steps_per_epoch": 40, "batch_size": 4, "image_size": 64, "lr": 1e-3}
    ]
    longer = plan({"steps": 80, "images_per_step": 4, "image_size": 64})
    assert longer["simclr"].pretraining.id != small["simclr"].pretraining.id
    # Only the downstream changed: the same encoder serves both, and the jobs differ by their settings.
    later = plan({"steps": 40, "images_per_step": 4, "image_size": 64, "downstream_epochs": 2})
    assert later["simclr"].pretraining.id == small["simclr"].pretraining.id
    assert later["simclr"].id != small["simclr"].id and later["simclr"].settings.epochs == 2
    # A method without pretraining is the same random encoder under every budget.
    assert plan("demo")["scratch"].pretraining.id == plan("paper")["scratch"].pretraining.id


def test_the_leaderboard_and_the_report_name_the_budget(tmp_path: Path):
    write_runs(tmp_path, [record("a", scores=[0.5], budget="cpu-600"), record("b", scores=[0.6], budget="cpu-600")])
    markdown = write_leaderboard(Board.load(tmp_path))[1].read_text(encoding="utf-8")
    assert "\nBudget: `cpu-600`.\n" in markdown
    assert "<p>Budget: <code>cpu-600</code>.</p>" in write_report(Board.load(tmp_path)).read_text(encoding="utf-8")


def test_a_bf16_budget_changes_the_encoders_of_the_methods_safe_in_it_only(tmp_path: Path):
    def pretrainings(precision: str) -> dict[str, str]:
        values = {"methods": ["simclr", "byol"], "tasks": ["synthetic-vessel"], "protocols": ["frozen"]}
        budget = {"name": f"small-{precision}", "steps": 40, "precision": precision}
        config = resolve_config({**values, "budget": budget}, {"results": str(tmp_path)}, get_registry())
        jobs = build_plan(config, get_registry(), echo=print).jobs
        return {job.pretraining.method.name: (job.pretraining.id, job.pretraining.precision) for job in jobs}

    fp32, bf16 = pretrainings("fp32"), pretrainings("bf16")
    assert bf16["simclr"][1] == "bf16" and bf16["simclr"][0] != fp32["simclr"][0]
    assert bf16["byol"] == fp32["byol"] and bf16["byol"][1] == "fp32"  # BYOL is not bf16-safe: same encoder
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16; got 'fp16'"):
        resolve_budget({"precision": "fp16"})
