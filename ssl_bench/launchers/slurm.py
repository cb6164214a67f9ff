"""``slurm``: the plan as two SLURM job arrays, submitted through submitit (``pip install 'ssl-bench[slurm]'``).

The first array has one task per pretraining that the plan still needs; the second, submitted with
``afterok`` on the first, one task per chain of transfer jobs (a job and the jobs that continue from it, see
``Job.upstream``). Each task rebuilds the plan from ``results/run-config.toml`` and runs its part with
:class:`ssl_bench.engine.Engine`, which records a job's failure in its ``error.json`` and goes on: a task exits
0 unless the run itself cannot go on, so ``afterok`` holds and the transfer tasks record the failures downstream.
A pretraining that raises is left to its transfer tasks, which try it again and record the error per job.

Tasks are submitit ``Checkpointable``: one that is preempted or reaches its time limit is requeued with the same
arguments and resumes from the checkpoints that pretraining and transfer write (a dead holder's lock is taken
over). This process waits for both arrays with a progress bar read from the results folder, as the local pool
does; ``ssl-bench status`` shows the same from any machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_bench.config import RunConfig, SlurmSettings, defined_tasks, read_config_file, resolve_config
from ssl_bench.engine import Engine, RunSummary, job_is_done, resolve_device
from ssl_bench.engine.engine import CLAIM_POLL_SECONDS
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.launchers.watch import Watch, write_run_config
from ssl_bench.planning import Job, Plan, build_plan
from ssl_bench.plugins import get_registry
from ssl_bench.pretraining import finished_pretraining
from ssl_bench.results import pretrain_dir

try:
    import submitit
except ModuleNotFoundError as error:
    if error.name != "submitit":
        raise
    raise ConfigError(
        "the slurm executor submits through submitit, which is not installed: pip install 'ssl-bench[slurm]'"
    ) from error


#: How long a pretraining task must stay dead (out of the queue, without a result) before its transfer array is
#: cancelled.
DEAD_PRETRAINING_GRACE_SECONDS = 30.0


class _ArrayTask(submitit.helpers.Checkpointable):
    """One array task: requeued with the same arguments when preempted or out of time (submitit's checkpoint)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path

    def _plan(self, *, retry_failed: bool = False) -> tuple[Engine, Plan]:
        if cpus := os.environ.get("SLURM_CPUS_PER_TASK"):  # torch would otherwise use every core of the node
            torch.set_num_threads(int(cpus))
        file_values = read_config_file(self.config_path)
        registry = get_registry(defined_tasks(file_values))
        config = resolve_config(file_values, {"overwrite": "missing"}, registry)
        engine = Engine(config, resolve_device(config.device), progress=False, retry_failed=retry_failed)
        return engine, build_plan(config, registry)


class PretrainTask(_ArrayTask):
    def __call__(self, pretraining_id: str) -> None:
        engine, plan = self._plan()
        pretraining = next((job.pretraining for job in plan.jobs if job.pretraining.id == pretraining_id), None)
        if pretraining is None:
            raise DataError(
                f"pretraining {pretraining_id} is no longer in the plan of {self.config_path}: submit again"
            )
        try:
            # None while the lock is held: by this task before it was requeued, until that lock is taken over.
            while engine.pretrainings.encoder(pretraining) is None:
                time.sleep(CLAIM_POLL_SECONDS)
        except Exception:  # the transfer tasks try it again and record the error in each job's error.json
            traceback.print_exc()


class TransferTask(_ArrayTask):
    def __init__(self, config_path: Path, *, retry_failed: bool) -> None:
        super().__init__(config_path)
        self.retry_failed = retry_failed

    def __call__(self, job_ids: list[str]) -> None:
        engine, plan = self._plan(retry_failed=self.retry_failed)
        jobs = [job for job in plan.jobs if job.id in job_ids]
        if len(jobs) != len(job_ids):
            raise DataError(f"jobs {job_ids} are no longer all in the plan of {self.config_path}: submit again")
        engine.run(Plan(jobs, plan.data))


def transfer_chains(jobs: list[Job]) -> list[list[Job]]:
    """The jobs grouped by the job their chain starts from (``finetune`` with its ``frozen``), in plan order."""
    chains: dict[str, list[Job]] = {}
    root_of: dict[str, str] = {}
    for job in jobs:  # every upstream job comes before the jobs that continue from it
        root_of[job.id] = root_of[job.upstream.id] if job.upstream is not None else job.id
        chains.setdefault(root_of[job.id], []).append(job)
    return list(chains.values())


@dataclass(frozen=True)
class Arrays:
    """The submitted arrays, one submitit job per task; an array is empty when nothing of it was left to do."""

    pretrainings: list[submitit.Job]
    transfers: list[submitit.Job]
    submitted: float  # Unix time

    @property
    def ids(self) -> list[str]:
        return [jobs[0].job_id.split("_")[0] for jobs in (self.pretrainings, self.transfers) if jobs]


class SlurmArrays:
    """Submits the plan as a pretraining array and a transfer array after it, and waits for both."""

    def __init__(self, config: RunConfig, *, retry_failed: bool = False, progress: bool = True, echo=print) -> None:
        self.config, self.retry_failed, self.progress, self.echo = config, retry_failed, progress, echo
        self.settings = config.slurm or SlurmSettings()
        self.logs = config.results / "logs" / "slurm"
        self._dead_since: float | None = None  # when a pretraining task was first seen dead (time.monotonic)

    def run(self, plan: Plan) -> RunSummary:
        return self.wait(plan, self.submit(plan))

    def wait(self, plan: Plan, arrays: Arrays) -> RunSummary:
        """Follow the plan's jobs until no task of ``arrays`` is queued or running; what they wrote and failed."""
        watch = Watch(self.config.results, plan, retry_failed=self.retry_failed, started=arrays.submitted)
        watch.wait(lambda: self._running(arrays), self.progress)
        broken = [job for job in arrays.pretrainings + arrays.transfers if _task_error(job)]
        if broken:
            logs = ", ".join(str(job.paths.stderr) for job in broken)
            raise DataError(f"SLURM array task(s) stopped with an error: {_task_error(broken[0])}; see {logs}")
        return watch.summary()

    def submit(self, plan: Plan) -> Arrays:
        """Submit what the plan still needs: its pretrainings, then its transfer chains ``afterok`` on them."""
        if shutil.which("sbatch") is None:
            raise ConfigError("the slurm executor submits with sbatch, which is not on PATH: run on a SLURM login node")
        config_path = write_run_config(self.config)
        submitted = time.time()
        results = self.config.results
        todo = [job for job in plan.jobs if not job_is_done(results, job, plan)]
        pretrainings = {
            job.pretraining.id
            for job in todo
            if job.pretraining.pool is not None
            and finished_pretraining(pretrain_dir(results, job.pretraining.id)) is None
        }
        todo_ids = {job.id for job in todo}
        chains = [[job.id for job in chain] for chain in transfer_chains(plan.jobs) if todo_ids & {j.id for j in chain}]
        pretrain_jobs = self._submit_array("pretrain", PretrainTask(config_path), sorted(pretrainings), None)
        dependency = f"afterok:{pretrain_jobs[0].job_id.split('_')[0]}" if pretrain_jobs else None
        transfer = TransferTask(config_path, retry_failed=self.retry_failed)
        arrays = Arrays(pretrain_jobs, self._submit_array("transfer", transfer, chains, dependency), submitted)
        self.echo(
            f"{len(plan.jobs)} jobs planned; submitted {len(pretrain_jobs)} pretraining and "
            f"{len(arrays.transfers)} transfer array tasks (SLURM jobs {', '.join(arrays.ids) or 'none'}; "
            f"logs: {self.logs}); watch with: ssl-bench status --results {results}"
        )
        return arrays

    def _submit_array(self, name: str, task: _ArrayTask, arguments: list, dependency: str | None) -> list:
        if not arguments:
            return []
        executor = submitit.SlurmExecutor(folder=self.logs / "%j")
        executor.update_parameters(
            job_name=f"ssl-bench-{name}",
            partition=self.settings.partition,
            time=self.settings.time_minutes,
            gpus_per_node=self.settings.gpus_per_job or None,
            cpus_per_task=self.settings.cpus_per_job or None,
            mem=f"{self.settings.mem_gb}G" if self.settings.mem_gb else None,
            array_parallelism=self.settings.array_parallelism,
            dependency=dependency,
        )
        try:
            return executor.map_array(task, arguments)
        except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as error:
            raise ConfigError(
                f"sbatch refused the {name} array: {str(error).strip().splitlines()[-1]}. "
                "Check the [slurm] settings or --slurm-* flags (sinfo lists the partitions)."
            ) from error

    def _running(self, arrays: Arrays) -> bool:
        """Whether a task of the arrays is still queued or running; a transfer array that can never start (a
        pretraining task died and is not coming back, so ``afterok`` cannot hold) is cancelled and reported."""
        states = _queued(arrays.ids)
        if states is None:
            return True  # the controller did not answer: look again later
        dead = _dead_pretrainings(arrays, states)
        if not dead:
            self._dead_since = None
            return bool(states)
        # squeue can miss a task that is between states for a moment: only a verdict that lasts is final.
        self._dead_since = self._dead_since or time.monotonic()
        if time.monotonic() - self._dead_since < DEAD_PRETRAINING_GRACE_SECONDS:
            return True
        transfer_id = arrays.ids[-1]
        subprocess.run(["scancel", transfer_id], check=False)
        logs = ", ".join(str(job.paths.stderr) for job, _ in dead)
        raise DataError(
            f"a pretraining array task died ({dead[0][1]}), so the transfer array {transfer_id} can never start "
            f"and was cancelled; see {logs}. Fix the cause and run the same command again to resume."
        )


def _dead_pretrainings(arrays: Arrays, states: dict[str, str]) -> list[tuple[submitit.Job, str]]:
    """The pretraining tasks, with why, that keep the transfer array from ever starting; none while one may come
    back. Where all of them finished, a "never satisfied" verdict is stale and the transfer array is released."""
    if not (arrays.transfers and "DependencyNeverSatisfied" in states.values()):
        return []
    pretraining_arrays = {job.job_id.split("_")[0] for job in arrays.pretrainings}
    if any(task.split("_")[0] in pretraining_arrays for task in states):
        return []  # a preempted task is requeued: SLURM judges ``afterok`` again once it has run
    dead = [(job, error) for job in arrays.pretrainings if (error := _task_error(job))]
    if not dead:  # SLURM judged ``afterok`` while a task was being requeued, and kept that verdict
        subprocess.run(["scontrol", "update", f"JobId={arrays.ids[-1]}", "Dependency="], check=False)
    return dead


def _queued(array_ids: list[str]) -> dict[str, str] | None:
    """Each queued or running task of the arrays, with why it waits; None if squeue gave no answer."""
    if not array_ids:
        return {}
    command = ["squeue", "--noheader", "--format=%i|%r", f"--jobs={','.join(array_ids)}"]
    output = subprocess.run(command, capture_output=True, text=True)
    if output.returncode != 0:
        # Jobs that finished long enough ago are forgotten by the controller: not an error.
        return {} if "Invalid job id" in output.stderr else None
    return dict(line.split("|", 1) for line in output.stdout.splitlines() if "|" in line)


def _task_error(job: submitit.Job) -> str | None:
    """Why an array task that is no longer queued did not finish: its exception, or that it left no result."""
    if not job.paths.result_pickle.exists():
        return f"task {job.job_id} ended without a result (killed, cancelled or out of memory)"
    exception = job.exception()
    return f"task {job.job_id}: {type(exception).__name__}: {exception}" if exception is not None else None
