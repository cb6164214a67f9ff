"""Plans a run (methods x tasks x protocols x label fractions x seeds) as jobs, each after the job it continues
from: loads each task's data once and prepares each modality's pretraining pool once.

A protocol that continues from another (``finetune`` from ``frozen``) makes a job that depends on that
protocol's job: the plan puts it first, and the engine keeps its selected model.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import ssl_bench
from ssl_bench.checkpoints import CheckpointRow
from ssl_bench.config import RunConfig, make_method, protocol_settings
from ssl_bench.errors import ConfigError, DataError, PluginError
from ssl_bench.method import Method, non_default_options, variant_name
from ssl_bench.models import VGG16_BN_TINY, encoder_kind, encoder_problem, row_name
from ssl_bench.planning.identity import Job, Plan, Pretraining, TaskData, as_json, digest
from ssl_bench.plugins import Registry
from ssl_bench.pools import PreparedPool, prepare_pool, resolve_pool
from ssl_bench.protocol import Protocol, changed_settings
from ssl_bench.results import pool_cache_dir
from ssl_bench.stats import MIN_SEEDS
from ssl_bench.supervised.labelled import labelled_count
from ssl_bench.supervised.loop import SupervisedSettings
from ssl_bench.task import Task, load_task_data


def build_plan(config: RunConfig, registry: Registry, echo: Callable[[str], None] = print) -> Plan:
    """Every job of the run, each after the job it continues from; tasks whose data is absent are left out, and so
    are protocols using shapes on a task whose shape source's data is absent."""
    rows = _rows(config, registry)
    tasks = _available_tasks(config, registry, echo)
    data, left_out = _load_data(tasks, config.data_root, echo)
    tasks = [task for task in tasks if task.name in data]
    protocols = _protocols(config, registry, echo)
    if config.protocols is not None:
        _refuse_protocols_serving_no_task(protocols, tasks, registry)
    _load_shape_sources(tasks, protocols, config, registry, data, echo)
    planner = _Planner(config, registry, data)
    pools: dict[str, PreparedPool] = {}
    for method, encoder in rows:
        for seed_index in range(config.seeds):
            for task in tasks:
                pretraining = _pretraining(method, encoder, task, seed_index, config, registry, pools, echo)
                for fraction in label_fractions(config, task):
                    labelled_count(len(data[task.name].train), fraction)  # too few labelled: refused before training
                    for name, protocol in protocols.items():
                        if protocol.serves(task) and (not protocol.uses_shapes or task.shape_source in data):
                            planner.job(pretraining, task, name, fraction, seed_index)
    _refuse_encoders_that_cannot_take_the_sizes(planner.jobs.values())
    if config.seeds < MIN_SEEDS:
        echo(
            f"note: with {config.seeds} seed(s) no difference between methods can be claimed: a claim takes "
            f"training seeds as its replicates and needs {MIN_SEEDS} per method (--seeds {MIN_SEEDS})"
        )
    # Insertion order already puts every upstream job before the jobs that continue from it.
    return Plan(list(planner.jobs.values()), data, left_out)


def _rows(config: RunConfig, registry: Registry) -> list[tuple[Method, str]]:
    """The leaderboard's rows as (method, encoder): each method on its own encoders or the run's, each checkpoint
    on its architecture; ``scratch`` without encoders of its own on every encoder in use, so that each row has the
    scratch of its architecture to be compared with. A method given a kind of encoder it cannot train is refused."""
    rows = [
        (make_method(registry, name, options), encoder)
        for name, options in config.methods.items()
        for encoder in config.method_encoders.get(name, (config.encoder,))
    ]
    rows += [(CheckpointRow(c), c.encoder or config.encoder) for c in config.checkpoints.values()]
    in_use = tuple(dict.fromkeys(encoder for _, encoder in rows))
    rows = [
        (method, encoder)
        for method, own in rows
        for encoder in (in_use if method.name == "scratch" and "scratch" not in config.method_encoders else (own,))
    ]
    rows = list(dict.fromkeys(rows))  # scratch once per encoder
    for method, encoder in rows:
        if (kind := encoder_kind(encoder)) not in method.encoder_kinds:
            raise ConfigError(
                f"method {method.name} trains {' and '.join(method.encoder_kinds)} encoders, not {encoder} (a {kind}): "
                f'give it one of those (encoder = "..." in [methods.{method.name}]) or leave it out'
            )
    return rows


def _pretraining(
    method: Method,
    encoder: str,
    task: Task,
    seed_index: int,
    config: RunConfig,
    registry: Registry,
    pools: dict,
    echo: Callable[[str], None],
) -> Pretraining:
    stages = config.budget.stages(method)
    checkpoint = method.checkpoint if isinstance(method, CheckpointRow) else None
    # A checkpoint's row is ssl-bench's own: no plugin registered it.
    plugin = f"ssl-bench=={ssl_bench.__version__}" if checkpoint else registry.plugin_version("methods", method.name)
    spec = {
        "method": method.name,
        "options": non_default_options(method.options),
        "method_version": method.version,
        "plugin": plugin,
        "encoder": encoder,
        "channels": task.channels,
        # The stages as they will run, not the budget's name: a changed schedule is another encoder.
        "stages": [dataclasses.asdict(stage) for stage in stages],
        "precision": (precision := config.budget.precision_of(method)),
        "seed_index": seed_index,
        "ssl_bench": ssl_bench.__version__,
    }
    pool = None
    if stages:
        if task.modality not in pools:
            source = resolve_pool(task.modality, registry, config.data_root, config.pools)
            pools[task.modality] = prepare_pool(source, pool_cache_dir(config.results), echo)
        pool = pools[task.modality]
        spec["pool"] = {"id": pool.id, "fingerprint": pool.fingerprint}
    if checkpoint:
        spec["checkpoint"] = {"sha256": checkpoint.sha256, "prefix": checkpoint.prefix}
        if checkpoint.timm_weights:  # loaded another way: another encoder (the key is absent where false, as before)
            spec["checkpoint"]["timm_weights"] = True
    return Pretraining(
        digest(spec), as_json(spec), method, encoder, stages, precision, task.channels, pool, spec["plugin"], checkpoint
    )


def label_fractions(config: RunConfig, task: Task) -> tuple[float, ...]:
    if config.label_fractions is not None:
        return config.label_fractions
    return (1.0,) if config.budget.scale == "demo" else task.label_fractions


def _available_tasks(config: RunConfig, registry: Registry, echo: Callable[[str], None]) -> list[Task]:
    """The run's tasks whose data is there. A task named in the run that cannot run is an error, not a skip."""
    tasks = []
    default = [name for name, task in registry.tasks.items() if task.default_run]
    for name in config.tasks if config.tasks is not None else default:
        task = registry.task(name)
        availability = task.availability(config.data_root)
        if availability.ok:
            tasks.append(task)
        elif config.tasks is not None:
            raise DataError(f"task {name} was asked for but cannot run: {availability.reason}")
        else:
            echo(f"skipping task {name}: {availability.reason}")
    return tasks


def _load_data(
    tasks: list[Task], data_root: Path | None, echo: Callable[[str], None]
) -> tuple[dict[str, TaskData], dict[str, str]]:
    """Each task's data, and the tasks whose plugin failed to load it (left out, said, and kept with the error)."""
    data, left_out = {}, {}
    for task in tasks:
        try:
            data[task.name] = load_task_data(task, data_root)
        except PluginError as error:
            left_out[task.name] = str(error)
            echo(f"{error}; the task is left out of this run")
    return data, left_out


def _protocols(config: RunConfig, registry: Registry, echo: Callable[[str], None]) -> dict[str, Protocol]:
    if config.protocols is not None:
        return {name: registry.protocol(name)() for name in config.protocols}
    default = {name: cls for name, cls in registry.protocols.items() if cls.default_run}
    demo = config.budget.scale == "demo"
    if demo and (quiet := [name for name, cls in default.items() if not cls.signal_at_demo_scale]):
        echo(
            f"note: the demo run leaves out {', '.join(quiet)}, whose scores mean nothing at demo scale; "
            f"{' '.join(f'-p {name}' for name in quiet)} runs it"
        )
    return {name: cls() for name, cls in default.items() if not demo or cls.signal_at_demo_scale}


def _refuse_protocols_serving_no_task(protocols: dict[str, Protocol], tasks: list[Task], registry: Registry) -> None:
    """A protocol the run names that serves none of its tasks is a mistake, not an empty plan."""
    for name, protocol in protocols.items():
        if tasks and not any(protocol.serves(task) for task in tasks):
            named = ", ".join(f"{task.name} ({task.kind})" for task in tasks)
            serving = sorted(p for p, cls in registry.protocols.items() if any(cls().serves(t) for t in tasks))
            raise ConfigError(
                f"protocol {name} serves {' and '.join(protocol.task_kinds)} tasks"
                f"{' with a shape source' if protocol.uses_shapes else ''}, and none of this run's tasks is one: "
                f"{named}. Protocols that serve them: {', '.join(serving) or 'none'}."
            )


def _refuse_encoders_that_cannot_take_the_sizes(jobs: Iterable[Job]) -> None:
    """An encoder that cannot take the image sizes it is given is refused before any work, not job by job."""
    sizes: dict[tuple[str, int], set[int]] = defaultdict(set)
    for job in jobs:
        given = sizes[job.pretraining.encoder, job.task.channels]
        given.update(stage.image_size for stage in job.pretraining.stages)
        if isinstance(job.settings, SupervisedSettings):  # the others take the supervised protocols' size too
            given.add(job.settings.image_size)
    for (encoder, channels), wanted in sizes.items():
        if problem := encoder_problem(encoder, channels, wanted):
            raise ConfigError(
                f"{problem}: it would fail every job of that size. Pick an encoder that takes any size (a CNN, "
                f"{VGG16_BN_TINY} by default) or a budget and protocol settings at the size it takes"
            )


def _load_shape_sources(
    tasks: list[Task],
    protocols: dict[str, Protocol],
    config: RunConfig,
    registry: Registry,
    data: dict[str, TaskData],
    echo: Callable[[str], None],
) -> None:
    """Adds to ``data`` the shape source of each task that a protocol using shapes serves; where that source's
    data is absent, says which protocols are left out on the task (its other protocols still run)."""
    for task in tasks:
        using = [name for name, protocol in protocols.items() if protocol.uses_shapes and protocol.serves(task)]
        if not using or task.shape_source in data:
            continue
        source = registry.task(task.shape_source)
        if source.kind != "segmentation":
            raise ConfigError(f"task {task.name}'s shape source {source.name} is a {source.kind} task, not masks")
        availability = source.availability(config.data_root)
        reason = availability.reason
        if availability.ok:
            try:
                data[source.name] = load_task_data(source, config.data_root)
                continue
            except PluginError as error:
                reason = str(error)
        echo(f"leaving out {', '.join(using)} on {task.name}: its shape source {source.name} cannot run: {reason}")


class _Planner:
    """Builds each job once, its upstream job first (memoised, so a shared upstream is one job)."""

    def __init__(self, config: RunConfig, registry: Registry, data: dict[str, TaskData]) -> None:
        self.config, self.registry = config, registry
        self.fingerprints = {name: task_data.fingerprint() for name, task_data in data.items()}  # hashed once
        self.jobs: dict[tuple, Job] = {}

    def job(self, pretraining: Pretraining, task: Task, protocol_name: str, fraction: float, seed_index: int) -> Job:
        key = (pretraining.id, task.name, protocol_name, fraction)
        if key in self.jobs:
            return self.jobs[key]
        protocol = self.registry.protocol(protocol_name)()
        if not protocol.serves(task):
            raise ConfigError(
                f"protocol {protocol_name} serves {', '.join(protocol.task_kinds)} tasks, not {task.name} "
                f"({task.kind}); leave it out of the run or pick tasks it serves"
            )
        upstream_name = protocol.continues_from(task, pretrained=pretraining.pretrained)
        upstream = self.job(pretraining, task, upstream_name, fraction, seed_index) if upstream_name else None
        overrides = (self.config.protocols or {}).get(protocol_name, {})
        base = protocol.settings(self.config.budget, task)
        settings = protocol_settings(protocol_name, base, overrides)
        spec = {
            "pretraining": pretraining.spec,
            "variant": row_name(pretraining.method.variant, pretraining.encoder),
            "task": task.name,
            "task_version": task.version,
            "task_plugin": self.registry.plugin_version("tasks", task.name),
            "data": self.fingerprints[task.name],
            "augmentation": {"flips": task.flips, "rotation_degrees": task.rotation_degrees},
            "protocol": {
                "name": protocol_name,
                "label": variant_name(protocol_name, changed_settings(settings, base)),
                "version": protocol.version,
                "plugin": self.registry.plugin_version("protocols", protocol_name),
                "settings": dataclasses.asdict(settings),
            },
            "continues_from": upstream.id if upstream else None,
            "label_fraction": fraction,
            "seed_index": seed_index,
            "budget": self.config.budget.name,
            "ssl_bench": ssl_bench.__version__,
        }
        if not task.ordered_split:
            # Jobs of these tasks once labelled the training list's prefix; their ids must differ from those jobs'.
            # Tasks that keep their released order label the prefix still, and keep their ids and cached results.
            spec["labelled_subset"] = "seeded permutation"
        if self.config.common_random_numbers:  # other random numbers: another job (absent, the ids stay as they were)
            spec["seeding"] = "common"
        if protocol.uses_shapes:  # the shapes steer training: other shapes, another job
            source = task.shape_source
            spec["shapes"] = {
                "task": source,
                "task_version": self.registry.task(source).version,
                "task_plugin": self.registry.plugin_version("tasks", source),
                "data": self.fingerprints[source],
            }
        job = Job(
            digest(spec),
            as_json(spec),
            pretraining,
            task,
            protocol,
            settings,
            fraction,
            seed_index,
            variant=spec["variant"],
            protocol_label=spec["protocol"]["label"],
            plugins=tuple(sorted({pretraining.plugin, spec["task_plugin"], spec["protocol"]["plugin"]})),
            upstream=upstream,
        )
        self.jobs[key] = job
        return job
