"""Tasks defined in the run file ([tasks.NAME] with a type): they run, are saved with the run's configuration, and
``status`` knows them from that file alone, with no environment variable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_cli import invoke

RUN_FILE = """
budget = "demo"
data_root = "{data_root}"
results = "{results}"
protocols = ["linear-seg"]
methods = ["scratch"]

[tasks.my-scans]
type = "folder"
folder = "scans"
modality = "ultrasound"
channels = 1
group = '^(patient\\d+)_'
"""


def write_scans(data_root: Path) -> None:
    """Three slices of each of four patients, a bright square to segment."""
    for folder in ("images", "masks"):
        (data_root / "scans" / folder).mkdir(parents=True)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    for patient in range(4):
        for index in range(3):
            image = np.where(mask > 0, 200, 60).astype(np.uint8)
            Image.fromarray(image).save(data_root / "scans" / "images" / f"patient{patient}_slice{index}.png")
            Image.fromarray(mask).save(data_root / "scans" / "masks" / f"patient{patient}_slice{index}.png")


def test_a_task_the_run_file_defines_runs_and_status_knows_it_from_the_saved_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_BENCH_FOLDER_TASKS", raising=False)
    data_root, results = tmp_path / "data", tmp_path / "results"
    write_scans(data_root)
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE.format(data_root=data_root, results=results))
    ran = invoke("run", "--config", str(run_file), "--no-progress")
    assert ran.exit_code == 0, ran.output
    assert len(list(results.glob("runs/*/result.json"))) == 1
    saved = (results / "run-config.toml").read_text()
    assert "[tasks.my-scans]" in saved and 'type = "folder"' in saved and "group = " in saved
    status = invoke("status", "--results", str(results))
    assert status.exit_code == 0, status.output
    assert "1 done" in status.output and "my-scans" not in invoke("list", "tasks").output  # only this run has it
    assert invoke("report", "--results", str(results)).exit_code == 0
    # The data commands see it through the same file: listed, checked (no series spans the split), drawn.
    listed = invoke("list", "tasks", "--config", str(run_file), "--data-root", str(data_root)).output
    assert "my-scans" in listed and "(available)" in listed.split("my-scans")[1].splitlines()[0]
    checked = invoke("data", "check", "--config", str(run_file), "--data-root", str(data_root)).output
    assert next(line for line in checked.splitlines() if "my-scans" in line).startswith("found")
    drawn = tmp_path / "scans.png"
    preview = invoke("data", "preview", "-t", "my-scans", "--config", str(run_file), "--out", str(drawn))
    assert preview.exit_code == 0 and drawn.is_file(), preview.output


def test_a_task_of_a_type_no_plugin_defines_is_refused_naming_the_table(tmp_path):
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE.format(data_root=tmp_path, results=tmp_path / "r").replace('"folder"', '"nifti"'))
    refused = invoke("run", "--config", str(run_file))
    assert refused.exit_code == 2
    assert "[tasks.my-scans] is of type 'nifti', which no installed plugin defines tasks of" in refused.output


def test_a_wrong_folder_table_in_the_run_file_says_where(tmp_path):
    run_file = tmp_path / "run.toml"
    run_file.write_text(RUN_FILE.format(data_root=tmp_path, results=tmp_path / "r").replace("channels = 1\n", ""))
    refused = invoke("run", "--config", str(run_file))
    assert refused.exit_code == 2
    assert "the run file's [tasks.my-scans]" in refused.output and "missing ['channels']" in refused.output
