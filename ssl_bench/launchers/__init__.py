"""Launchers: where a run's engines run, named by the ``executor`` setting: ``inline`` (in this process, the
default), ``local`` (a pool of worker processes on this machine) or ``slurm`` (two job arrays through submitit).
One module each.

Whatever the launcher, the engine that runs a job is :class:`ssl_bench.engine.Engine`: in this process, in each
local worker, in each array task. The lock files of :mod:`ssl_bench.locks` keep them from colliding, so a
launcher only decides where engines run; none has a scheduler or a queue of its own.
"""

from __future__ import annotations

from typing import Protocol

from ssl_bench.config import RunConfig
from ssl_bench.engine import RunSummary
from ssl_bench.errors import ConfigError
from ssl_bench.planning import Plan


class Launcher(Protocol):
    """Runs the jobs of a plan that are not done and says what was written and what failed."""

    def run(self, plan: Plan) -> RunSummary: ...


def _check_gpus(gpus: list[str]) -> None:
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError(f"--gpus {','.join(gpus)} names GPUs, but torch sees no CUDA device: drop --gpus")
    if wrong := [gpu for gpu in gpus if not (gpu.isdigit() and int(gpu) < count)]:
        raise ConfigError(f"--gpus: {', '.join(wrong)} is not a GPU index of this machine (0 to {count - 1})")


def create_launcher(
    config: RunConfig,
    *,
    workers: int = 1,
    gpus: list[str] | None = None,
    progress: bool = True,
    echo=print,
    fail_fast: bool = False,
    retry_failed: bool = False,
) -> Launcher:
    """The executor that ``config.executor`` names, set up with the run's flags."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if gpus:
        _check_gpus(gpus)
    if (workers > 1 or gpus) and config.executor != "local":
        raise ConfigError(f"--workers and --gpus size a local pool, not executor {config.executor}: drop them")
    if fail_fast and config.executor != "inline":
        raise ConfigError(
            f"--fail-fast stops this process at the first failed job, but executor {config.executor} runs the "
            "jobs in other processes: use --executor inline with --fail-fast"
        )
    if config.executor == "local":
        from ssl_bench.launchers.local import LocalPool, slots

        return LocalPool(config, slots(workers, gpus), retry_failed=retry_failed, progress=progress, echo=echo)
    if config.executor == "slurm":
        from ssl_bench.launchers.slurm import SlurmArrays

        return SlurmArrays(config, retry_failed=retry_failed, progress=progress, echo=echo)
    from ssl_bench.launchers.inline import Inline

    return Inline(config, progress=progress, echo=echo, fail_fast=fail_fast, retry_failed=retry_failed)
