"""Every CLI command, with its output and side effects."""

import json
import os
from pathlib import Path

import pytest
from conftest import shared_data
from PIL import Image
from typer.testing import CliRunner

from ssl_bench.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_plugins_lists_distribution_version_and_registrations(example_plugin):
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "simclr  (ssl-bench 0.1.0)" in result.output and "  methods: simclr" in result.output
    assert "synthetic  (ssl-bench 0.1.0)" in result.output and "  pools: synthetic-fundus" in result.output
    assert "denoise  (ssl-bench-example-plugin 0.1.0)" in result.output


def test_plugins_shows_a_broken_plugin_with_its_error(site):
    from conftest import write_distribution

    (site / "sbtest_broken.py").write_text("raise RuntimeError('cannot start')\n")
    write_distribution(site, "sbtest-broken", "1.0", {"broken": "sbtest_broken"})
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "FAILED: RuntimeError: cannot start" in result.output and "methods: scratch" in result.output


def test_list_methods_and_tasks_with_availability():
    result = invoke("list", "methods")
    assert result.exit_code == 0
    assert "scratch" in result.output and "Random initialisation" in result.output
    assert "tasks:" not in result.output
    tasks = invoke("list", "tasks").output
    assert "synthetic-vessel" in tasks and "(available)" in tasks
    drive_line = next(line for line in tasks.splitlines() if "drive-vessel" in line)
    assert "missing:" in drive_line and "drive.grand-challenge.org" in drive_line


def test_list_tasks_finds_real_drive_under_data_root():
    root = shared_data("DRIVE").parent
    tasks = invoke("list", "tasks", "--data-root", str(root)).output
    drive_line = next(line for line in tasks.splitlines() if "drive-vessel" in line)
    assert "(available)" in drive_line


def test_run_needs_a_selection_and_reports_unknown_names_clearly(tmp_path):
    nothing = runner.invoke(app, ["run", "--results", str(tmp_path)])
    assert nothing.exit_code == 2 and "--all" in nothing.output
    typo = runner.invoke(app, ["run", "-m", "simclrr", "-t", "synthetic-vessel", "--results", str(tmp_path)])
    assert typo.exit_code == 2 and "Did you mean simclr" in typo.output and "Traceback" not in typo.output


def test_run_writes_results_config_and_leaderboards_then_resumes_and_refuses(tmp_path):
    results = tmp_path / "results"
    args = ["run", "-m", "scratch", "-t", "synthetic-lung", "--results", str(results), "--no-progress"]
    first = invoke(*args, "-p", "finetune", "-p", "clustering", "--data-root", str(tmp_path / "no-data"))
    assert first.exit_code == 0, first.output
    assert "2 jobs planned, 0 already done, 2 to run." in first.output
    records = [json.loads(path.read_text()) for path in results.glob("runs/*/result.json")]
    assert {(r["task"], r["protocol"]["name"]) for r in records} == {("synthetic-lung", "finetune")} | {
        ("synthetic-lung", "clustering")
    }
    config = (results / "run-config.toml").read_text()
    assert 'budget = "demo"' in config and 'tasks = [\n    "synthetic-lung",\n]' in config
    assert "[protocols.clustering]" in config and "[protocols.finetune]" in config
    markdown = (results / "leaderboard.md").read_text()
    assert "scratch" in markdown and "smoke test" in markdown.lower()
    assert "## `finetune`" in markdown and "## `clustering`" in markdown

    again = invoke(*args, "-p", "finetune", "-p", "clustering")
    assert "2 jobs planned, 2 already done, 0 to run." in again.output
    refused = runner.invoke(app, [*args, "-p", "finetune", "--overwrite", "never"])
    assert refused.exit_code == 2 and "already exist" in refused.output

    (results / "leaderboard.md").unlink()
    rebuilt = invoke("leaderboard", "--results", str(results))
    assert rebuilt.exit_code == 0 and (results / "leaderboard.md").read_text() == markdown


def test_run_from_a_config_file_with_method_options(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        'tasks = ["synthetic-vessel"]\nseeds = 1\nprotocols = ["clustering"]\n[methods.simclr]\ntemperature = 0.2\n'
    )
    results = tmp_path / "results"
    result = invoke("run", "--config", str(config), "--results", str(results), "--no-progress")
    assert result.exit_code == 0, result.output
    (result_file,) = results.glob("runs/*/result.json")
    assert json.loads(result_file.read_text())["variant"] == "simclr(temperature=0.2)"
    assert "temperature = 0.2" in (results / "run-config.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("[methods.simclr]\ntemprature = 0.2\n")
    refused = runner.invoke(app, ["run", "--config", str(bad), "--results", str(results)])
    assert refused.exit_code == 2 and "has no option 'temprature'" in refused.output


def test_bad_config_values_are_one_line_errors(tmp_path):
    cases = {
        "label_fractions = 0.5\n": None,  # a bare number is one fraction
        'label_fractions = ["a"]\n': "label_fractions must be a list of numbers",
        'pools = "x"\n': "pools must be a table",
        'protocols = ["nope"]\n': "Unknown protocol 'nope'",
        'protocols = "frozen"\n': "protocols must be a list",
    }
    for text, message in cases.items():
        config = tmp_path / "run.toml"
        protocols = "" if text.startswith("protocols") else 'protocols = ["clustering"]\n'
        config.write_text('tasks = ["synthetic-vessel"]\nmethods = ["scratch"]\n' + protocols + text)
        result = runner.invoke(app, ["run", "--config", str(config), "--results", str(tmp_path / "r"), "--no-progress"])
        if message is None:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, text


def test_a_failed_plugin_is_named_at_the_start_of_a_run(site, tmp_path):
    from conftest import write_distribution

    (site / "sbtest_broken.py").write_text("raise RuntimeError('cannot start')\n")
    write_distribution(site, "sbtest-broken", "1.0", {"broken": "sbtest_broken"})
    result = runner.invoke(
        app, ["run", "-m", "scratch", "-t", "synthetic-lung", "-p", "clustering", "--results", str(tmp_path)]
    )
    assert result.exit_code == 0
    assert "plugin broken (sbtest-broken 1.0) failed to load and is left out: RuntimeError: cannot start" in (
        result.output
    )


def test_no_report_runs_the_jobs_and_writes_no_leaderboard(tmp_path):
    args = ["run", "-m", "scratch", "-t", "synthetic-lung", "-p", "clustering", "--results", str(tmp_path)]
    quiet = invoke(*args, "--no-report")
    assert quiet.exit_code == 0, quiet.output
    assert len(list(tmp_path.glob("runs/*/result.json"))) == 1
    assert not (tmp_path / "leaderboard.csv").exists() and not (tmp_path / "report").exists()
    assert "wrote" not in quiet.output
    assert invoke("report", "--results", str(tmp_path)).exit_code == 0  # written later, from the same records
    assert (tmp_path / "report" / "index.html").exists()


def test_list_protocols():
    result = invoke("list", "protocols")
    assert result.exit_code == 0 and "methods:" not in result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    assert set(lines) >= {"frozen", "finetune", "linear-probe", "linear-seg", "clustering"}
    assert "[segmentation, classification]" in lines["finetune"] and "[classification]" in lines["linear-probe"]


def test_leaderboard_without_results_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "run" in result.output.lower()


def test_check_passes_the_example_plugin_and_names_unknown_ones(example_plugin):
    result = invoke("check", "denoise")
    assert result.exit_code == 0, result.output
    for encoder in ("vgg16_bn_tiny on 3", "vgg16_bn_tiny on 1", "resnet18 on 1", "vit_tiny_patch16_224 on 1"):
        assert f"PASS  method denoise: 10 steps of each stage, {encoder}-channel images" in result.output
    assert "0 failed, 0 not tested" in result.output
    unknown = runner.invoke(app, ["check", "nope"])
    assert unknown.exit_code == 2 and "no plugin named 'nope'" in unknown.output


def test_check_reports_a_broken_method(site):
    from conftest import write_distribution

    (site / "sbtest_frozen.py").write_text(
        "from ssl_bench.api import Method, Stage, hookimpl\n"
        "import torch\n"
        "class Frozen(Method):\n"
        "    name = 'sbtest-frozen'\n"
        "    description = 'its loss never reaches the encoder'\n"
        "    def stages(self, scale):\n"
        "        return [Stage('s', 1, 1, 4, 32, 1e-3)]\n"
        "    def build_model(self, encoder, stage, channels):\n"
        "        model = torch.nn.Linear(1, 1)\n"
        "        model.encoder = encoder\n"
        "        return model\n"
        "    def training_step(self, model, images, stage, generator):\n"
        "        return model(torch.ones(1, 1)).sum()\n"
        "@hookimpl\n"
        "def ssl_bench_register_methods(register):\n"
        "    register(Frozen)\n"
    )
    write_distribution(site, "sbtest-frozen", "1.0", {"frozen": "sbtest_frozen"})
    result = runner.invoke(app, ["check", "frozen"])
    assert result.exit_code == 1
    assert "FAIL  method sbtest-frozen: 10 steps of each stage, vgg16_bn_tiny on 3-channel images" in result.output
    assert "did not change" in result.output


def test_check_trains_every_stage_and_catches_a_loss_that_diverges_after_a_few_steps(site):
    from conftest import write_distribution

    (site / "sbtest_late.py").write_text(
        "from ssl_bench.api import Method, Stage, hookimpl\n"
        "from ssl_bench.api.nets import UNet\n"
        "class Late(Method):\n"
        "    name = 'sbtest-late'\n"
        "    description = 'its second stage diverges at its sixth step'\n"
        "    def stages(self, scale):\n"
        "        return [Stage('first', 1, 1, 4, 32, 1e-3), Stage('second', 1, 1, 4, 32, 1e-3)]\n"
        "    def build_model(self, encoder, stage, channels):\n"
        "        self.steps = 0\n"
        "        return UNet(encoder)\n"
        "    def training_step(self, model, images, stage, generator):\n"
        "        self.steps += 1\n"
        "        late = stage.name == 'second' and self.steps > 5\n"
        "        return model(images).mean() * (float('nan') if late else 1.0)\n"
        "@hookimpl\n"
        "def ssl_bench_register_methods(register):\n"
        "    register(Late)\n"
    )
    write_distribution(site, "sbtest-late", "1.0", {"late": "sbtest_late"})
    result = runner.invoke(app, ["check", "late"])
    assert result.exit_code == 1
    assert "the loss became nan by step 5 of second" in result.output
    short = runner.invoke(app, ["check", "late", "--steps", "5"])  # the old 2-step check missed it
    assert short.exit_code == 0, short.output
    assert "first loss" in short.output and "second loss" in short.output


@pytest.mark.parametrize("size", [96])
def test_data_preview_writes_a_png(tmp_path, size):
    out = tmp_path / "preview.png"
    result = invoke("data", "preview", "--out", str(out), "--size", str(size))
    assert result.exit_code == 0 and str(out) in result.output
    with Image.open(out) as image:
        assert image.width > 4 * size and image.height > 2 * size


def test_data_check_reports_found_missing_and_differing_counts(monkeypatch):
    from ssl_bench.plugins import get_registry

    synthetic_lung = type(get_registry().task("synthetic-lung"))
    monkeypatch.setattr(synthetic_lung, "expected_counts", (30, 8))
    result = invoke("data", "check")
    assert result.exit_code == 0
    lines = {line.split()[1]: line for line in result.output.splitlines()}
    assert lines["synthetic-vessel"].startswith("found") and "24 train, 8 test images" in lines["synthetic-vessel"]
    assert lines["synthetic-lung"].startswith("warning") and "official release has 30 train" in lines["synthetic-lung"]
    assert lines["drive-vessel"].startswith("missing") and "drive.grand-challenge.org" in lines["drive-vessel"]


def test_data_check_finds_real_drive():
    root = shared_data("DRIVE").parent
    result = invoke("data", "check", "--data-root", str(root))
    drive = next(line for line in result.output.splitlines() if "drive-vessel" in line)
    assert drive.startswith("found") and "20 train, 20 test images" in drive


def test_data_check_shows_pneumoniamnists_class_balance_and_warns_that_its_training_labels_are_sorted():
    root = shared_data("MedMNIST").parent
    lines = invoke("data", "check", "--data-root", str(root)).output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["pneumoniamnist"])
    # This copy: 388 normal (class 0) and 3494 pneumonia training images, sorted by label; the official val and test.
    assert lines[at].startswith("warning") and "3882 train, 624 test images" in lines[at]
    balance = "images of class 0/1: train 388/3494 (10%/90%), val 135/389 (26%/74%), test 234/390 (38%/62%)"
    assert lines[at + 1].strip() == balance
    assert lines[at + 2].strip().startswith("warning: the training labels are sorted: 2 runs of equal labels")


def test_data_check_names_a_corrupt_file_and_fails(tmp_path):
    root = shared_data("DRIVE")
    copy = tmp_path / "DRIVE"
    import shutil

    shutil.copytree(root, copy)
    (copy / "training" / "images" / "23_training.tif").write_bytes(b"not a tiff")
    result = runner.invoke(app, ["data", "check", "--data-root", str(tmp_path)])
    assert result.exit_code == 1
    drive = next(line for line in result.output.splitlines() if "drive-vessel" in line)
    assert drive.startswith("error") and "23_training.tif" in drive


def test_a_results_path_that_is_a_file_is_a_clear_error(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    result = runner.invoke(app, ["run", "-m", "scratch", "-t", "synthetic-lung", "--results", str(a_file)])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output and "Traceback" not in result.output


def test_a_results_folder_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    # Root may write anywhere, so the permission that a user lacks is denied through os.access here.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    result = runner.invoke(app, ["run", "-m", "scratch", "-t", "synthetic-lung", "--results", str(tmp_path / "new")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"results folder {tmp_path / 'new'} cannot be written here ({tmp_path} is not writable)" in result.output


def test_data_preview_draws_any_task_as_read_and_refuses_one_it_cannot_read(tmp_path):
    out = tmp_path / "lung.png"
    result = invoke("data", "preview", "-t", "synthetic-lung", "--out", str(out), "-n", "2")
    assert result.exit_code == 0 and str(out) in result.output
    with Image.open(out) as image:
        assert image.height > image.width  # four rows (train, its masks, test, its masks) of two images
    absent = invoke("data", "preview", "-t", "drive-vessel", "--out", str(tmp_path / "drive.png"))
    assert absent.exit_code == 2 and "task drive-vessel cannot be drawn: " in absent.output
    assert len(absent.output.strip().splitlines()) == 1 and not (tmp_path / "drive.png").exists()


def test_an_encoder_that_cannot_take_the_runs_size_is_refused_before_any_work(tmp_path):
    results = tmp_path / "results"
    result = invoke(
        "run", "-m", "scratch", "-t", "synthetic-vessel", "-p", "frozen", "--encoder", "swin_tiny_patch4_window7_224",
        "--results", str(results),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "encoder swin_tiny_patch4_window7_224 cannot take 96x96 images (" in result.output
    assert "Pick an encoder that takes any size" in result.output and "Traceback" not in result.output
    assert not list(results.glob("runs/*/result.json"))
