"""The slurm executor against a real one-node SLURM cluster (munged, slurmctld and slurmd started here, as root).

Where the cluster cannot run (not root, or Debian's ``slurm-wlm``/``munge`` not installed) the SLURM tests skip
with the reason; under ``CI=true`` they fail, since ``.ci/run`` installs both.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import install_plugin
from typer.testing import CliRunner

from ssl_bench.cli import app
from ssl_bench.config import SlurmSettings, read_config_file, resolve_config
from ssl_bench.errors import ConfigError
from ssl_bench.launchers import create_launcher
from ssl_bench.planning import build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.record import read_record
from ssl_bench.results import pretrain_dir

# One cluster per session: under pytest-xdist every test of this module runs on the same worker.
pytestmark = pytest.mark.xdist_group("slurm")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "srun", "sinfo")

TINY_METHODS = """
from ssl_bench.api import hookimpl, Method, Stage
from ssl_bench.api.nets import UNet


class Tiny(Method):
    name = "sbtest-tiny"
    description = "three steps of a feature-energy loss"

    def stages(self, scale):
        return [Stage("only", epochs=1, steps_per_epoch=3, batch_size=4, image_size=32, lr=1e-3)]

    def build_model(self, encoder, stage, channels):
        return UNet(encoder)

    def training_step(self, model, images, stage, generator):
        return model(images).pow(2).mean()


class Tinier(Tiny):
    name = "sbtest-tinier"
    description = "three steps of another loss"

    def training_step(self, model, images, stage, generator):
        return model(images).abs().mean()


class Sleepy(Tiny):
    name = "sbtest-sleepy"
    description = "twelve steps of half a second: long enough to be preempted"

    def stages(self, scale):
        return [Stage("only", epochs=1, steps_per_epoch=12, batch_size=4, image_size=32, lr=1e-3)]

    def training_step(self, model, images, stage, generator):
        import time

        time.sleep(0.5)
        return super().training_step(model, images, stage, generator)


@hookimpl
def ssl_bench_register_methods(register):
    register(Tiny)
    register(Tinier)
    register(Sleepy)
"""

#: Two pretrained methods, one task, frozen then finetune (a chain): 2 pretrainings, 4 jobs in 2 chains.
TINY_RUN = """
tasks = ["synthetic-vessel"]
[methods.sbtest-tiny]
[methods.sbtest-tinier]
[protocols.frozen]
epochs = 1
image_size = 32
[protocols.finetune]
epochs = 1
image_size = 32
"""

#: One pretraining long enough to be preempted in its middle, and one job after it.
SLEEPY_RUN = """
tasks = ["synthetic-vessel"]
[methods.sbtest-sleepy]
[protocols.frozen]
epochs = 1
image_size = 32
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "starting munged, slurmctld and slurmd needs root"
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not found: apt-get install slurm-wlm munge"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _slurm_conf(folder: Path, host: str, munge_socket: Path) -> str:
    return f"""ClusterName=sslbench
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _start(command: list[str], log: Path) -> None:
    started = subprocess.run(command, capture_output=True, text=True)
    if started.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(f"{command[0]} did not start: {started.stderr.strip()} {tail}")


def _stop(pid_file: Path) -> None:
    """SIGTERM the daemon whose pid ``pid_file`` holds (one this fixture started), and wait for it to go."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Path:
    """A one-node cluster of this machine, its own munge key and socket; yields its slurm.conf."""
    if reason := _unavailable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SLURM tests, but {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    munge = folder / "munge"
    for sub in (munge, folder / "state", folder / "spool"):
        sub.mkdir(mode=0o700)
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    munge_socket = munge / "munge.socket"
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, socket.gethostname().split(".")[0], munge_socket))
    munged = ["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}", f"--pid-file={munge}/munged.pid"]
    _start([*munged, f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"], munge / "munged.log")
    try:
        _start(["slurmctld", "-f", str(conf)], folder / "slurmctld.log")
        _start(["slurmd", "-f", str(conf)], folder / "slurmd.log")
        environment = {**os.environ, "SLURM_CONF": str(conf)}
        for _ in range(300):
            states = subprocess.run(["sinfo", "-h", "-o", "%t"], env=environment, capture_output=True, text=True)
            if states.stdout.strip() == "idle":
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the node never became idle: {states.stdout} {states.stderr}")
        yield conf
    finally:
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", munge / "munged.pid"):
            _stop(pid_file)


@pytest.fixture
def slurm(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    return slurm_cluster


@pytest.fixture
def tiny_methods(site):
    install_plugin(site, "sbtest_tiny", TINY_METHODS, "tiny")


def _tiny_config(tmp_path: Path, results: str, run: str = TINY_RUN, **overrides):
    path = tmp_path / "run.toml"
    path.write_text(run)
    return resolve_config(read_config_file(path), {"results": str(tmp_path / results), **overrides}, get_registry())


def _metrics(results: Path) -> dict:
    return {r.job_id: r.metrics for r in (read_record(path) for path in results.glob("runs/*/result.json"))}


def _node_state() -> str:
    return subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=True).stdout.strip()


def _scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_a_plan_through_two_slurm_arrays_gives_the_inline_metrics(slurm, tiny_methods, tmp_path):
    threads = torch.get_num_threads()  # each array task gets the CPUs, and so the threads, that inline uses here
    slurm = {"time_minutes": 20, "cpus_per_job": threads, "mem_gb": 1}
    config = _tiny_config(tmp_path, "slurm", executor="slurm", slurm=slurm)
    plan = build_plan(config, get_registry())
    executor = create_launcher(config, progress=False, echo=lambda line: None)
    arrays = executor.submit(plan)
    assert (len(arrays.pretrainings), len(arrays.transfers)) == (2, 2)
    pretrain_id, transfer_id = arrays.ids
    assert [job.job_id for job in arrays.pretrainings] == [f"{pretrain_id}_0", f"{pretrain_id}_1"]
    transfer = _scontrol(transfer_id)
    assert f"Dependency=afterok:{pretrain_id}_*" in transfer
    assert f"MinCPUsNode={threads}" in transfer and "MinMemoryNode=1G" in transfer
    summary = executor.wait(plan, arrays)
    assert len(summary.written) == 4 and not summary.failed

    inline = _tiny_config(tmp_path, "inline")
    create_launcher(inline, progress=False, echo=lambda line: None).run(build_plan(inline, get_registry()))
    assert _metrics(tmp_path / "slurm") == _metrics(tmp_path / "inline")
    # Each pretraining trained exactly once, in the pretraining array; the transfer array only loaded them.
    logs = {path.name: path.read_text() for path in (tmp_path / "slurm" / "logs" / "slurm").glob("*/*_log.out")}
    assert sorted(logs) == sorted(f"{job.job_id}_0_log.out" for job in arrays.pretrainings + arrays.transfers)
    pretrained = [name for name, text in logs.items() if "pretraining sbtest-" in text]
    assert sorted(pretrained) == [f"{pretrain_id}_0_0_log.out", f"{pretrain_id}_1_0_log.out"]


@pytest.mark.slow
def test_a_preempted_pretraining_is_requeued_and_resumes_its_checkpoint(slurm, tiny_methods, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_CHECKPOINT_SECONDS", "0")  # sbatch passes it on: a checkpoint after every step
    config = _tiny_config(tmp_path, "slurm", SLEEPY_RUN, executor="slurm", slurm={"time_minutes": 20})
    plan = build_plan(config, get_registry())
    executor = create_launcher(config, progress=False, echo=lambda line: None)
    arrays = executor.submit(plan)
    folder = pretrain_dir(config.results, plan.jobs[0].pretraining.id)
    deadline = time.monotonic() + 120
    while not (folder / "state.pt").exists():  # some steps done and checkpointed
        assert time.monotonic() < deadline, "the pretraining never wrote a checkpoint"
        time.sleep(0.2)
    # What SLURM sends ahead of a preemption or the time limit; submitit checkpoints the task and requeues it.
    task = arrays.pretrainings[0].job_id
    subprocess.run(["scancel", "--signal=USR2", task], check=True)
    while "Reason=BeginTime" not in (state := _scontrol(task)):
        assert time.monotonic() < deadline, f"the task was not requeued: {state}"
        time.sleep(0.2)
    requeued = time.time()
    assert "Restarts=1" in state
    # SLURM holds a requeued job back for two minutes; the test need not wait for that, only for the node to have
    # finished the first run, and for a new second: slurmd revoked the first run's credential, and one issued in
    # the same second counts as revoked (its times have a resolution of one second), so a start then kills the
    # job ("Killing non-startable batch job: Job credential revoked", seen in CI).
    while (node := _node_state()) != "idle":
        assert time.monotonic() < deadline, f"the node never finished the first run: {node}"
        time.sleep(0.2)
    time.sleep(max(0.0, requeued + 2 - time.time()))
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)
    summary = executor.wait(plan, arrays)
    assert len(summary.written) == 1 and not summary.failed
    assert 0 < json.loads((folder / "pretraining.json").read_text())["resumed_from_step"] < 12

    inline = _tiny_config(tmp_path, "inline", SLEEPY_RUN)
    create_launcher(inline, progress=False, echo=lambda line: None).run(build_plan(inline, get_registry()))
    assert _metrics(tmp_path / "slurm") == _metrics(tmp_path / "inline")


def test_a_partition_that_does_not_exist_is_a_clear_error(slurm, tiny_methods, tmp_path):
    config = _tiny_config(tmp_path, "results", executor="slurm", slurm={"partition": "no-such-partition"})
    executor = create_launcher(config, progress=False, echo=lambda line: None)
    with pytest.raises(ConfigError, match=r"sbatch refused the pretrain array: .*Invalid partition name.*sinfo lists"):
        executor.submit(build_plan(config, get_registry()))
    assert not subprocess.run(["squeue", "-h"], capture_output=True, text=True, check=True).stdout.strip()


def test_slurm_settings_come_from_the_config_file_with_flags_over_them(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('executor = "slurm"\n[methods.scratch]\n[slurm]\npartition = "gpu"\ntime_minutes = 30\n')
    config = resolve_config(read_config_file(path), {"slurm": {"time_minutes": 90, "partition": None}}, get_registry())
    assert config.executor == "slurm"
    assert config.slurm == SlurmSettings(partition="gpu", time_minutes=90)
    # What the workers read back is the same configuration.
    (tmp_path / "saved.toml").write_text(config.to_toml())
    assert resolve_config(read_config_file(tmp_path / "saved.toml"), {}, get_registry()) == config
    assert resolve_config({"methods": ["scratch"]}, {}, get_registry()).slurm is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"partiton": "gpu"}, r"\[slurm\] has no option 'partiton'; its options: partition"),
        ({"gpus_per_job": "one"}, r"option gpus_per_job of \[slurm\] must be int; got 'one'"),
        ({"time_minutes": 0}, r"time_minutes of \[slurm\] must be at least 1; got 0"),
        ({"mem_gb": -1}, r"mem_gb of \[slurm\] must be at least 0; got -1"),
        ({"partition": ""}, r"partition of \[slurm\] must be a partition's name"),
        ("gpu", r"slurm must be a \[slurm\] table"),
    ],
)
def test_bad_slurm_settings_are_clear_errors(table, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config({"methods": ["scratch"], "slurm": table}, {}, get_registry())


def test_without_submitit_the_slurm_executor_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # an import of it now fails as if it were absent
    monkeypatch.delitem(sys.modules, "ssl_bench.launchers.slurm", raising=False)
    config = resolve_config({"methods": ["scratch"], "executor": "slurm"}, {"results": str(tmp_path)}, get_registry())
    with pytest.raises(ConfigError, match=r"pip install 'ssl-bench\[slurm\]'"):
        create_launcher(config)


def test_fail_fast_and_workers_are_refused_where_they_cannot_apply(tmp_path):
    config = resolve_config({"methods": ["scratch"], "executor": "slurm"}, {"results": str(tmp_path)}, get_registry())
    with pytest.raises(ConfigError, match=r"--fail-fast .* use --executor inline"):
        create_launcher(config, fail_fast=True)
    with pytest.raises(ConfigError, match="--workers and --gpus size a local pool, not executor slurm"):
        create_launcher(config, workers=2)


def test_the_run_command_reports_a_bad_executor_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["run", "-m", "scratch", "--executor", "cluster", "--results", str(tmp_path)])
    assert result.exit_code == 2 and "executor must be one of inline, local, slurm; got 'cluster'" in result.output


def test_a_transfer_array_is_cancelled_only_once_no_pretraining_task_can_come_back(tiny_methods, tmp_path, monkeypatch):
    """A preempted pretraining task is requeued: while it is queued again, squeue may already call the transfer
    array's ``afterok`` "never satisfied". That is final only once no pretraining task is left in the queue, one
    of them left no result, and this has lasted; where all of them finished, the stale verdict is lifted."""
    from types import SimpleNamespace

    from ssl_bench.errors import DataError
    from ssl_bench.launchers import slurm as launcher

    def task(job_id: str) -> SimpleNamespace:
        paths = SimpleNamespace(stderr=tmp_path / f"{job_id}.err", result_pickle=tmp_path / f"{job_id}.pkl")
        return SimpleNamespace(job_id=job_id, paths=paths, exception=lambda: None)

    arrays = launcher.Arrays([task("5_0"), task("5_1")], [task("6_0")], submitted=0.0)
    commands: list[list[str]] = []
    monkeypatch.setattr(launcher.subprocess, "run", lambda command, **kwargs: commands.append(command))
    arrays_launcher = launcher.SlurmArrays(_tiny_config(tmp_path, "slurm", executor="slurm"), progress=False)

    requeued = {"5_0": "BeginTime", "6_[0]": "DependencyNeverSatisfied"}
    monkeypatch.setattr(launcher, "_queued", lambda ids: requeued)
    assert arrays_launcher._running(arrays) and commands == []

    # Both pretraining tasks left the queue; 5_1 left no result. Not final at once: squeue may have missed it.
    (tmp_path / "5_0.pkl").touch()
    monkeypatch.setattr(launcher, "_queued", lambda ids: {"6_[0]": "DependencyNeverSatisfied"})
    assert arrays_launcher._running(arrays) and commands == []
    monkeypatch.setattr(launcher, "DEAD_PRETRAINING_GRACE_SECONDS", 0.0)
    with pytest.raises(DataError, match=r"task 5_1 ended without a result .* transfer array 6 can never start"):
        arrays_launcher._running(arrays)
    assert commands == [["scancel", "6"]]

    # Both finished: the transfer array waits on a verdict SLURM made during the requeue, and is released.
    commands.clear()
    (tmp_path / "5_1.pkl").touch()
    assert arrays_launcher._running(arrays)
    assert commands == [["scontrol", "update", "JobId=6", "Dependency="]]
