"""A failing job is recorded and the rest of the plan goes on; failed cells show as failed; two workers share
one results folder without ever training the same pretraining twice."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import install_plugin
from typer.testing import CliRunner

from ssl_bench.cli import app
from ssl_bench.config import read_config_file, resolve_config
from ssl_bench.engine import Engine
from ssl_bench.errors import TrainingError
from ssl_bench.launchers.local import slots
from ssl_bench.locks import Lock
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.record import read_failure, read_record
from ssl_bench.results import CannotWrite
from ssl_bench.stopping import request_stop

runner = CliRunner()

FAILING = """
import torch
from ssl_bench.api import hookimpl, Method, Stage
from ssl_bench.api.nets import UNet


class Diverging(Method):
    name = "sbtest-nan"
    description = "its loss turns NaN"

    def stages(self, scale):
        return [Stage("only", epochs=1, steps_per_epoch=4, batch_size=4, image_size=32, lr=1e-3)]

    def build_model(self, encoder, stage, channels):
        return UNet(encoder)

    def training_step(self, model, images, stage, generator):
        return model(images).mean() * float("nan")


class Raising(Diverging):
    name = "sbtest-raise"
    description = "raises inside training_step"

    def training_step(self, model, images, stage, generator):
        raise RuntimeError("a bug in the plugin")


class Slow(Diverging):
    name = "sbtest-slow"
    description = "takes a second per step, long enough to be stopped"

    def training_step(self, model, images, stage, generator):
        import time

        print("stepping", flush=True)
        time.sleep(1.0)
        return model(images).mean()


@hookimpl
def ssl_bench_register_methods(register):
    register(Diverging)
    register(Raising)
    register(Slow)
"""


@pytest.fixture
def failing_methods(site):
    install_plugin(site, "sbtest_failing", FAILING, "failing")


def _config(results, **values):
    values = {"tasks": ["synthetic-lung"], "protocols": ["finetune"], **values}
    return resolve_config(values, {"results": str(results)}, get_registry())


def _executor(config, **flags):
    return Engine(config, torch.device("cpu"), progress=False, echo=lambda line: None, **flags)


def test_failed_jobs_are_recorded_and_the_rest_of_the_plan_goes_on(failing_methods, tmp_path):
    config = _config(tmp_path, methods=["sbtest-nan", "sbtest-raise", "scratch"])
    plan = build_plan(config, get_registry())
    summary = _executor(config).run(plan)
    (written,) = summary.written
    assert read_record(written).method == "scratch"
    failures = {(f.variant, f.protocol): f for f in summary.failed}
    assert set(failures) == {(m, p) for m in ("sbtest-nan", "sbtest-raise") for p in ("frozen", "finetune")}
    nan = failures["sbtest-nan", "frozen"]
    assert nan.phase == "pretraining" and "TrainingError: sbtest-nan: the loss became nan" in nan.error
    assert "Traceback" in nan.traceback and nan.spec["task"] == "synthetic-lung"
    raised = failures["sbtest-raise", "frozen"]
    assert raised.phase == "pretraining" and raised.error == "RuntimeError: a bug in the plugin"
    downstream = failures["sbtest-nan", "finetune"]
    assert downstream.phase == "upstream" and nan.job_id in downstream.error
    on_disk = read_failure(tmp_path / "runs" / nan.job_id / "error.json")
    assert on_disk == nan


def test_failed_jobs_are_kept_until_retried(failing_methods, tmp_path):
    config = _config(tmp_path, methods=["sbtest-raise"])
    lines = []

    def run(**flags):
        executor = Engine(config, torch.device("cpu"), progress=False, echo=lines.append, **flags)
        return executor.run(build_plan(config, get_registry()))

    first = run()
    assert len(first.failed) == 2 and "2 jobs planned, 0 already done, 2 to run." in lines
    again = run()
    assert len(again.failed) == 2 and lines[-1] == (
        "2 jobs planned, 0 already done, 2 failed before (--retry-failed runs them again), 0 to run."
    )
    retried = run(retry_failed=True)
    assert len(retried.failed) == 2 and all(f.unix_time > first.failed[0].unix_time for f in retried.failed)


def test_fail_fast_stops_at_the_first_failure(failing_methods, tmp_path):
    config = _config(tmp_path, methods=["sbtest-nan", "scratch"])
    with pytest.raises(TrainingError, match="the loss became nan"):
        _executor(config, fail_fast=True).run(build_plan(config, get_registry()))
    assert not list(tmp_path.glob("runs/*/result.json"))


def test_the_command_exits_non_zero_naming_failed_jobs_and_the_leaderboard_marks_them(failing_methods, tmp_path):
    args = ["run", "-m", "sbtest-nan", "-m", "scratch", "-t", "synthetic-lung", "-p", "finetune"]
    result = runner.invoke(app, [*args, "--results", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    assert "2 job(s) failed" in result.output and "--retry-failed" in result.output
    assert "(sbtest-nan, synthetic-lung, frozen, seed 0): TrainingError" in result.output
    markdown = (tmp_path / "leaderboard.md").read_text()
    finetune = markdown[markdown.index("## `finetune`") :]
    assert "| sbtest-nan | failed |" in finetune and "| scratch |" in finetune
    assert "## Failed jobs" in markdown and "TrainingError: sbtest-nan: the loss became nan" in markdown


def test_a_sigterm_mid_pretraining_says_how_to_resume_and_leaves_nothing_half_written(failing_methods, tmp_path):
    command = [sys.executable, "-m", "ssl_bench", "run", "-m", "sbtest-slow", "-t", "synthetic-lung", "-p", "frozen"]
    command += ["--results", str(tmp_path), "--no-progress"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    for line in run.stdout:  # wait until it is inside a training step
        output += line
        if line.startswith("stepping"):
            break
    run.send_signal(signal.SIGTERM)  # what a scheduler sends on preemption
    output += run.communicate(timeout=120)[0]
    assert run.returncode == 130, output
    assert "interrupted: run the same command again to resume; nothing finished is lost" in output
    assert "Traceback" not in output
    assert not list(tmp_path.glob("runs/*/result.json")) and not list(tmp_path.glob("**/*.tmp"))
    assert not list(tmp_path.glob("**/lock"))  # released on the way out, so a resume need not wait for it


def test_a_sigterm_to_the_local_launcher_alone_stops_its_workers_too(failing_methods, tmp_path):
    """A scheduler may signal the launcher's process only: its workers stop with it (each checkpoints its job)
    rather than train on as orphans."""
    command = [sys.executable, "-m", "ssl_bench", "run", "-m", "sbtest-slow", "-t", "synthetic-lung", "-p", "frozen"]
    command += ["--seeds", "2", "--workers", "2", "--results", str(tmp_path), "--no-progress"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs = [tmp_path / "logs" / f"worker-{index}.log" for index in range(2)]
    deadline = time.monotonic() + 120
    while not any(log.is_file() and "stepping" in log.read_text() for log in logs) and time.monotonic() < deadline:
        time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=180)[0]
    assert run.returncode == 130, output
    assert not _processes_running_on(tmp_path), "a worker trains on after its launcher stopped"


def _processes_running_on(results: Path) -> list[int]:
    """The pids of processes whose command line names ``results``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(results).encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return pids


def test_a_stop_that_torch_turns_into_another_error_interrupts_the_job_and_never_fails_it(tmp_path, monkeypatch):
    """A SIGTERM that lands inside ``torch.save`` can surface as torch's RuntimeError, not as KeyboardInterrupt: the
    job is still interrupted (no error.json, so a plain rerun runs it), not failed. The same error with no stop asked
    for is the job's own failure."""

    def engine(results):
        values = {"methods": ["scratch"], "tasks": ["synthetic-lung"], "protocols": ["finetune"]}
        config = resolve_config(values, {"results": str(results)}, get_registry())
        return Engine(config, torch.device("cpu"), progress=False, echo=lambda line: None), build_plan(
            config, get_registry()
        )

    def torch_error(*args, stop: bool = True, **kwargs):
        try:
            if stop:
                request_stop(signal.SIGTERM, None)
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None

    run_job = Engine.run_job
    monkeypatch.setattr(Engine, "run_job", torch_error)
    with pytest.raises(KeyboardInterrupt):
        Engine.run(*engine(tmp_path / "stopped"))
    assert not list((tmp_path / "stopped").glob("runs/*/error.json"))
    monkeypatch.setattr(Engine, "run_job", run_job)
    summary = Engine.run(*engine(tmp_path / "stopped"))
    assert len(summary.written) == 1 and not summary.failed

    monkeypatch.setattr(Engine, "run_job", lambda *args, **kwargs: torch_error(stop=False))
    (failure,) = Engine.run(*engine(tmp_path / "failed")).failed
    assert failure.error.startswith("RuntimeError: [enforce fail")


@pytest.mark.slow
def test_two_workers_on_one_results_folder_never_train_the_same_pretraining(tmp_path):
    selection = ["-m", "simclr", "-m", "scratch", "-t", "synthetic-vessel", "-p", "finetune", "--no-progress"]
    command = [sys.executable, "-m", "ssl_bench", "run", *selection, "--results", str(tmp_path / "two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    # Exactly one worker trained simclr's encoder; the other waited for it and reused it.
    assert sum("pretraining simclr (" in output for output in outputs) == 1, outputs
    two = {r.job_id: r for r in (read_record(path) for path in (tmp_path / "two").glob("runs/*/result.json"))}
    assert sorted((r.variant, r.protocol.name) for r in two.values()) == [
        ("scratch", "finetune"),
        ("simclr", "finetune"),
        ("simclr", "frozen"),
    ]
    assert not list((tmp_path / "two").glob("**/lock"))

    # The local pool: the same jobs, the same numbers.
    pool = runner.invoke(app, ["run", *selection, "--workers", "2", "--results", str(tmp_path / "pool")])
    assert pool.exit_code == 0, pool.output
    assert "3 jobs planned for 2 workers" in pool.output
    logs = [(tmp_path / "pool" / "logs" / f"worker-{i}.log").read_text() for i in range(2)]
    assert sum("pretraining simclr (" in log for log in logs) == 1, logs
    # Only the parent writes the leaderboards, once the workers are done.
    assert not any("leaderboard" in log for log in logs) and (tmp_path / "pool" / "leaderboard.csv").exists()
    pooled = {r.job_id: r for r in (read_record(path) for path in (tmp_path / "pool").glob("runs/*/result.json"))}
    assert {k: r.metrics for k, r in pooled.items()} == {k: r.metrics for k, r in two.items()}


def test_each_gpu_worker_sees_only_its_gpu_and_cpu_workers_share_the_cores(monkeypatch):
    assert slots(1, ["0", "3"]) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "3"}]
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert slots(4, None) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4
    assert slots(16, None) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 16


def test_status_reports_done_running_failed_and_pending_jobs(failing_methods, tmp_path):
    args = ["run", "-m", "sbtest-raise", "-m", "scratch", "-t", "synthetic-lung", "-p", "finetune"]
    assert runner.invoke(app, [*args, "--results", str(tmp_path), "--no-progress"]).exit_code == 1
    # One more seed, not run: its jobs are pending; one of them is claimed by a live worker (this process).
    config_path = tmp_path / "run-config.toml"
    config_path.write_text(config_path.read_text().replace("seeds = 1", "seeds = 2"))
    plan = build_plan(resolve_config(read_config_file(config_path), {}, get_registry()), get_registry())
    claimed = next(job for job in plan.jobs if job.seed_index == 1 and job.spec["variant"] == "scratch")
    lock = Lock(tmp_path / "runs" / claimed.id)
    assert lock.acquire()
    try:
        result = runner.invoke(app, ["status", "--results", str(tmp_path)])
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "1 done, 1 running, 2 failed, 2 pending of 6 jobs" in lines
    assert any(line.startswith(f"running  {claimed.id}") and "held by" in line for line in lines)
    assert any(line.startswith("failed") and "RuntimeError: a bug in the plugin" in line for line in lines)
    assert "finetune: about " in result.output and "pretrainings: 2 to go" in result.output


def test_status_without_a_run_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["status", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "start a run with --results" in result.output


BROKEN_TASK = """
import torch
from ssl_bench.api import hookimpl, SegmentationData, SegmentationSplit, Task


class Working(Task):
    name = "sbtest-working"
    description = "three flat images, and one more to test on"
    modality = "sbtest"
    channels = 1
    target = "nothing"

    def load(self, data_root):
        def split(values):
            images = torch.tensor(values, dtype=torch.uint8)[:, None, None, None].expand(-1, 1, 8, 8)
            return SegmentationSplit(images.contiguous(), torch.zeros(len(values), 8, 8, dtype=torch.bool),
                                     tuple(map(str, values)))

        return SegmentationData(split([1, 2, 3]), split([4]))


class Broken(Working):
    name = "sbtest-broken"
    description = "its load() has a bug"

    def load(self, data_root):
        raise ValueError("a bug in the task plugin")


@hookimpl
def ssl_bench_register_tasks(register):
    register(Working())
    register(Broken())
"""


@pytest.fixture
def broken_task(site):
    install_plugin(site, "sbtest_broken", BROKEN_TASK, "broken")


def test_a_task_whose_plugin_fails_to_load_is_left_out_and_the_rest_runs(broken_task, tmp_path):
    args = ["run", "-m", "scratch", "-t", "synthetic-lung", "-t", "sbtest-broken", "-p", "finetune", "--no-progress"]
    result = runner.invoke(app, [*args, "--results", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "task sbtest-broken failed to load its data (ValueError: a bug in the task plugin)" in result.output
    assert "left out: task sbtest-broken" in result.output
    (written,) = [read_record(path) for path in tmp_path.glob("runs/*/result.json")]
    assert written.task == "synthetic-lung"

    checked = runner.invoke(app, ["data", "check"])
    assert checked.exit_code == 1 and "Traceback" not in checked.output
    rows = {line.split()[1]: line.split()[0] for line in checked.output.splitlines() if line[:1] != " "}
    assert rows["sbtest-broken"] == "error" and rows["synthetic-lung"] == "found"


def test_the_default_pool_of_a_modality_is_made_without_a_task_that_fails_to_load(broken_task):
    from ssl_bench.errors import SslBenchWarning
    from ssl_bench.pools import resolve_pool

    source = resolve_pool("sbtest", get_registry(), None, {})
    with pytest.warns(SslBenchWarning, match="task sbtest-broken failed to load .*the sbtest pool is made without it"):
        images = source.load()
    assert images[:, 0, 0, 0].tolist() == [1, 2, 3]  # the working task's training images


def test_a_job_that_cannot_write_stops_the_run_instead_of_failing_every_job_after_it(tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise CannotWrite("no space left to write runs/x/result.json (...): free some space and run the same command")

    monkeypatch.setattr(Engine, "run_job", disk_full)
    config = _config(tmp_path, methods=["scratch"])
    with pytest.raises(CannotWrite, match="no space left"):
        _executor(config).run(build_plan(config, get_registry()))
    assert not list(tmp_path.glob("runs/*/error.json"))


@pytest.fixture
def immutable(tmp_path):
    """Makes a folder read-only even for root (``chattr +i``, recursively) for the test, and writable after."""
    made = []

    def make(folder):
        if subprocess.run(["chattr", "-R", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available on this file system")
        made.append(folder)

    yield make
    for folder in made:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


def test_a_read_only_results_folder_can_be_read_and_writing_to_it_is_one_clear_error(tmp_path, immutable):
    args = ["run", "-m", "scratch", "-t", "synthetic-lung", "-p", "finetune", "--no-progress"]
    assert runner.invoke(app, [*args, "--results", str(tmp_path / "results")]).exit_code == 0
    immutable(tmp_path / "results")
    status = runner.invoke(app, ["status", "--results", str(tmp_path / "results")])
    assert status.exit_code == 0 and "1 done, 0 running, 0 failed, 0 pending of 1 jobs" in status.output
    for command in ("leaderboard", "report"):
        result = runner.invoke(app, [command, "--results", str(tmp_path / "results")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"error: cannot write {tmp_path / 'results' / 'leaderboard.csv'}: Operation not permitted" in (
            result.output
        )
