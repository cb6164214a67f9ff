"""A third-party protocol (the example package's ``deep-probe``) found through its entry point, run, ranked, and
added to a finished run without re-running any job of another protocol."""

import pytest
from typer.testing import CliRunner

from ssl_bench.cli import app
from ssl_bench.config import resolve_config
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.record import read_record

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["run", *args, "--no-progress"], catch_exceptions=False)


def test_a_protocol_plugin_is_found_through_its_entry_point(example_plugin):
    registry = get_registry()
    assert registry.protocol("deep-probe").task_kinds == ("segmentation",)
    assert registry.plugin_version("protocols", "deep-probe") == "ssl-bench-example-plugin==0.1.0"
    listing = runner.invoke(app, ["list", "protocols"]).output
    assert "deep-probe" in listing and "[segmentation]" in listing


def test_adding_a_protocol_plugin_reruns_no_job_of_another_protocol(example_plugin, tmp_path):
    results = tmp_path / "results"
    common = ["-m", "scratch", "-t", "synthetic-vessel", "--results", str(results)]
    first = _run(*common, "-p", "finetune")
    assert first.exit_code == 0, first.output
    (finetune_file,) = results.glob("runs/*/result.json")
    written = finetune_file.stat().st_mtime_ns

    second = _run(*common, "-p", "finetune", "-p", "deep-probe")
    assert second.exit_code == 0, second.output
    assert "2 jobs planned, 1 already done, 1 to run." in second.output
    assert finetune_file.stat().st_mtime_ns == written
    records = {read_record(path).protocol.name: read_record(path) for path in results.glob("runs/*/result.json")}
    probe = records["deep-probe"]
    assert probe.protocol.frozen_encoder and "ssl-bench-example-plugin==0.1.0" in probe.versions["plugins"]
    assert len(probe.metrics["dice"].per_image) == 8
    markdown = (results / "leaderboard.md").read_text()
    assert "## `deep-probe`" in markdown and "## `finetune`" in markdown


def test_protocol_settings_from_a_config_name_the_variant(example_plugin, tmp_path):
    config = resolve_config(
        {"methods": ["scratch"], "tasks": ["synthetic-vessel"], "protocols": {"deep-probe": {"lr": 0.1}}},
        {"results": str(tmp_path)},
        get_registry(),
    )
    (job,) = build_plan(config, get_registry()).jobs
    assert job.spec["protocol"]["label"] == "deep-probe(lr=0.1)" and job.settings.lr == 0.1


@pytest.mark.parametrize("plugin", ["deep-probe", "example-disks", "denoise"])
def test_check_passes_each_part_of_the_example_package(example_plugin, plugin):
    result = runner.invoke(app, ["check", plugin])
    assert result.exit_code == 0, result.output
    assert "0 failed, 0 not tested" in result.output
    # Seeded: the same numbers on every call.
    assert runner.invoke(app, ["check", plugin]).output == result.output
