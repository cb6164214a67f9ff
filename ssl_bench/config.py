"""A run, fully described: a TOML file that command-line flags override. Example::

budget = "demo"             # or "paper", "matched", or a [budget] table (below)
seeds = 3
encoder = "vgg16_bn_tiny"   # of every row that names none: or any timm CNN or ViT name
data_root = "~/data"        # also SSL_BENCH_DATA
label_fractions = [1.0, 0.2]
common_random_numbers = true   # every row's job of a task, protocol and seed draws the same random numbers
tasks = ["synthetic-vessel", "drive-vessel"]   # absent: every task whose data is there
protocols = ["frozen", "finetune"]   # absent: every protocol but experimental ones
executor = "slurm"          # inline (the default), local or slurm

[tasks.my-polyps]           # instead of the list, a table per task; one with a type defines the task here
type = "folder"             # a folder of images/ and masks/ (see ssl_bench_tasks.folder for its keys)
folder = "polyps"
modality = "endoscopy"
channels = 3
[tasks.drive-vessel]        # an installed task: an empty table

[methods.scratch]           # absent [methods]: every method, default options
[methods.simclr]
temperature = 0.2
encoder = ["vgg16_bn_tiny", "resnet18"]   # its own encoders, a row each (scratch runs on every one in use)

[protocols.linear-seg]      # a table instead of the list: protocols with settings
lr = 0.01                   # a changed setting names the protocol's variant: linear-seg(lr=0.01)

[pools]                     # a folder of unlabelled images per modality
fundus = "~/data/eyepacs"

[budget]                    # instead of budget = "...": every method the same pretraining (see ssl_bench.budget)
name = "cpu-2k"             # absent: named by what it changes, e.g. paper(steps=2000, ...)
steps = 2000                # optimiser steps per pretraining
images_per_step = 16        # source images per step
image_size = 64             # pretraining size of each method's largest stage
downstream_epochs = 30      # the supervised protocols' epochs
downstream_image_size = 128 # the largest input size of any protocol
precision = "bf16"          # bf16-safe methods pretrain under bf16 autocast (fp32 by default)

[slurm]                     # the slurm executor's array tasks; flags --slurm-partition etc. override them
partition = "gpu"           # absent: the cluster's default partition
gpus_per_job = 1
cpus_per_job = 8            # absent or 0: the cluster's default; torch uses as many threads
mem_gb = 32                 # absent or 0: the cluster's default
time_minutes = 240          # per array task; one that runs out is requeued and resumes from its checkpoints
array_parallelism = 16      # array tasks running at once, per array
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from ssl_bench.budget import BUILT_IN, Budget, resolve_budget
from ssl_bench.checkpoints import Checkpoint, read_checkpoints
from ssl_bench.errors import ConfigError
from ssl_bench.method import Method
from ssl_bench.models import VGG16_BN_TINY, checked_encoder, encoder_kind
from ssl_bench.plugins import Registry
from ssl_bench.results import checkpoint_seconds

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DEVICES = ("auto", "cpu", "cuda")
OVERWRITE_POLICIES = ("never", "missing", "always")
EXECUTORS = ("inline", "local", "slurm")
#: More training seeds than any study runs: a larger number is a typo (it would plan jobs until memory runs out).
MAX_SEEDS = 1000


@dataclass(frozen=True)
class SlurmSettings:
    """The size and place of each SLURM array task (``[slurm]`` in the config file, ``--slurm-*`` flags)."""

    #: None: the cluster's default partition
    partition: str | None = None
    gpus_per_job: int = 0
    #: 0: the cluster's default (cpus_per_job, mem_gb)
    cpus_per_job: int = 0
    mem_gb: int = 0
    time_minutes: int = 240
    array_parallelism: int = 16


@dataclass(frozen=True)
class RunConfig:
    methods: dict[str, dict[str, object]]
    #: None: every registered task whose data is there (absent ones are skipped, not errors)
    tasks: tuple[str, ...] | None
    seeds: int = 1
    budget: Budget = BUILT_IN["demo"]
    device: str = "auto"
    data_root: Path | None = None
    results: Path = Path("results")
    overwrite: str = "missing"
    #: None: each task's own fractions (``Task.label_fractions``), or 1.0 at the demo scale
    label_fractions: tuple[float, ...] | None = None
    #: The encoder of every row that names none (the methods without their own, the checkpoints without theirs)
    encoder: str = VGG16_BN_TINY
    #: The encoders of the methods that name their own (``encoder = "resnet18"`` or a list in ``[methods.NAME]``),
    #: each one row per encoder
    method_encoders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pools: dict[str, str] = field(default_factory=dict)
    #: protocol name -> settings overrides; None: every registered protocol with the budget's settings
    protocols: dict[str, dict[str, object]] | None = None
    executor: str = "inline"
    #: None: no [slurm] table nor --slurm-* flag was given (the slurm executor then uses the defaults)
    slurm: SlurmSettings | None = None
    #: The tasks the run file defines (its [tasks.NAME] tables with a type), which plugins register: see
    #: :func:`defined_tasks`.
    task_tables: dict[str, dict[str, object]] = field(default_factory=dict)
    #: Rows whose encoder is loaded from a file, by row name ([checkpoints.NAME]; see ssl_bench.checkpoints)
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    #: Every row's job of a task, protocol, label fraction and seed index draws the same random numbers (decoder
    #: init, batch order, augmentation), so that rows differ by their encoders alone; false: each job its own
    common_random_numbers: bool = True

    def to_toml(self) -> str:
        values = dataclasses.asdict(self)
        values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}
        if self.slurm is not None:
            values["slurm"] = {k: v for k, v in values["slurm"].items() if v is not None}
        budget = {k: v for k, v in values["budget"].items() if v is not None}
        values["budget"] = self.budget.name if BUILT_IN.get(self.budget.name) == self.budget else budget
        del values["task_tables"], values["method_encoders"]
        for name, encoders in self.method_encoders.items():  # back in the method's table, where the file had it
            values["methods"][name] = {**values["methods"][name], "encoder": list(encoders)}
        values["checkpoints"] = {
            name: {"file": str(checkpoint.file), "prefix": checkpoint.prefix}
            | ({"encoder": checkpoint.encoder} if checkpoint.encoder else {})
            | ({"timm_weights": True} if checkpoint.timm_weights else {})
            for name, checkpoint in self.checkpoints.items()
        }
        if not self.checkpoints:
            del values["checkpoints"]
        if self.tasks is not None:  # tables where the file defines tasks, else the plain list of names
            tables = {name: self.task_tables.get(name, {}) for name in self.tasks}
            values["tasks"] = tables if self.task_tables else list(self.tasks)
        if self.label_fractions is not None:
            values["label_fractions"] = list(self.label_fractions)
        return tomli_w.dumps(values)


def read_config_file(path: Path) -> dict:
    try:
        with open(path, "rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError as error:
        raise ConfigError(f"config file {path} does not exist.") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false; got {value!r}.")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def _methods(
    value: object, registry: Registry, encoder: str
) -> tuple[dict[str, dict[str, object]], dict[str, tuple[str, ...]]]:
    """Each method's options, and the encoders of those whose table names its own (``encoder``, not an option).
    Every method (absent or ``all``) is every one that trains the run's ``encoder``."""
    if value is None or value == "all":
        kind = encoder_kind(encoder)
        return {name: {} for name, cls in registry.methods.items() if kind in cls.encoder_kinds}, {}
    if isinstance(value, list):
        value = {name: {} for name in value}
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise ConfigError("methods must be a table of [methods.NAME] option tables, a list of names, or 'all'.")
    methods, encoders = {}, {}
    for name, table in value.items():
        methods[name] = {key: option for key, option in table.items() if key != "encoder"}
        make_method(registry, name, methods[name])  # validates name and options now, not hours into a run
        if "encoder" in table:
            encoders[name] = _encoders(f"[methods.{name}]", table["encoder"])
    return methods, encoders


def _encoders(where: str, value: object) -> tuple[str, ...]:
    """An ``encoder`` value of a table: one name or a list of names, each known."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise ConfigError(f'encoder of {where} must be a name or a list of names, e.g. ["resnet18"]; got {value!r}.')
    return tuple(dict.fromkeys(checked_encoder(name) for name in names))


def defined_tasks(file_values: dict) -> dict[str, dict[str, object]]:
    """The tasks a run file defines: its ``[tasks.NAME]`` tables with a ``type`` key (the plugin that knows the
    type registers them, given these tables when the registry is built: ``get_registry(defined_tasks(values))``)."""
    tables = file_values.get("tasks")
    if not isinstance(tables, dict):
        return {}
    return {name: table for name, table in tables.items() if isinstance(table, dict) and "type" in table}


def _tasks(value: object, registry: Registry) -> tuple[str, ...] | None:
    if value is None or value == "all":
        return None
    if isinstance(value, dict) and all(isinstance(table, dict) for table in value.values()):
        value = list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"tasks must be a list of task names, [tasks.NAME] tables or 'all'; got {value!r}.")
    for name in value:
        registry.task(name)
    return tuple(value)


def _defined_tasks_registered(tables: dict[str, dict[str, object]], registry: Registry) -> dict[str, dict]:
    """``tables`` once every task they define is in ``registry``: a type no plugin knows is an error, here."""
    for name, table in tables.items():
        if name not in registry.tasks:
            raise ConfigError(
                f"[tasks.{name}] is of type {table['type']!r}, which no installed plugin defines tasks of "
                '(built in: "folder", "volumes"); see `ssl-bench plugins`'
            )
    return tables


def _protocols(value: object, registry: Registry) -> dict[str, dict[str, object]] | None:
    if value is None or value == "all":
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value):
        value = {name: {} for name in value}
    if not isinstance(value, dict) or not all(isinstance(options, dict) for options in value.values()):
        raise ConfigError(
            "protocols must be a list of protocol names, a table of [protocols.NAME] settings, or 'all'; "
            f"got {value!r}."
        )
    for name in value:
        registry.protocol(name)
    return dict(value)


def _label_fractions(value: object) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    numbers = all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in values)
    if not values or not numbers or any(not 0 < f <= 1 for f in values):
        raise ConfigError(f"label_fractions must be a list of numbers in (0, 1], e.g. [1.0, 0.2]; got {value!r}.")
    return tuple(float(f) for f in values)


def _pools(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(folder, str) for folder in value.values()):
        raise ConfigError(
            f'pools must be a table of modality = "folder" lines, e.g. fundus = "~/eyepacs"; got {value!r}.'
        )
    return {str(k): v for k, v in value.items()}


def _results_folder(value: object, read_only: bool) -> Path:
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"results {path} is a file, not a folder: pass --results a folder (it is made if absent).")
    if read_only:
        return path
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"results folder {path} cannot be written here ({existing} is not writable): pick another.")
    return path


def _slurm(file_table: object, flags: dict[str, object]) -> SlurmSettings | None:
    """The [slurm] table of the config file with the --slurm-* flags (those not None) over it."""
    flags = {key: value for key, value in flags.items() if value is not None}
    if file_table is None and not flags:
        return None
    if file_table is not None and not isinstance(file_table, dict):
        raise ConfigError(f'slurm must be a [slurm] table of settings, e.g. partition = "gpu"; got {file_table!r}.')
    typed = _typed_values("[slurm]", SlurmSettings(), {**(file_table or {}), **flags})
    settings = SlurmSettings(**typed)
    if settings.partition is not None and not (isinstance(settings.partition, str) and settings.partition):
        raise ConfigError(
            f"partition of [slurm] must be a partition's name (sinfo lists them); got {settings.partition!r}."
        )
    minimums = {"gpus_per_job": 0, "cpus_per_job": 0, "mem_gb": 0, "time_minutes": 1, "array_parallelism": 1}
    for key, least in minimums.items():
        if getattr(settings, key) < least:
            raise ConfigError(f"{key} of [slurm] must be at least {least}; got {getattr(settings, key)}.")
    return settings


def resolve_config(file_values: dict, overrides: dict, registry: Registry, *, read_only: bool = False) -> RunConfig:
    """Merge a config file's values with command-line overrides (those not None) and validate them; ``read_only``
    for a command that only reads the results folder (which need not be writable then).

    ``overrides["slurm"]``, a dict of settings, is merged into the file's [slurm] table rather than replacing it.
    """
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(RunConfig)}
    if "profile" in values:
        raise ConfigError(f'profile is now budget: write budget = "{values["profile"]}" (or a [budget] table).')
    if unknown := sorted(set(values) - known):
        raise ConfigError(f"unknown config keys: {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
    seeds = values.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"seeds must be a whole number from 1 to {MAX_SEEDS}; got {seeds!r}.")
    data_root = values.get("data_root") or os.environ.get("SSL_BENCH_DATA")
    if data_root is not None and not isinstance(data_root, str):
        raise ConfigError(f'data_root must be a folder\'s path, e.g. data_root = "~/data"; got {data_root!r}.')
    checkpoint_seconds()  # a bad SSL_BENCH_CHECKPOINT_SECONDS is refused before any work, not in every job
    task_tables = _defined_tasks_registered(defined_tasks(values), registry)  # before the names: a clearer error
    encoder = checked_encoder(str(values.get("encoder", VGG16_BN_TINY)))
    methods, method_encoders = _methods(values.get("methods"), registry, encoder)
    return RunConfig(
        methods=methods,
        method_encoders=method_encoders,
        tasks=_tasks(values.get("tasks"), registry),
        task_tables=task_tables,
        checkpoints=read_checkpoints(values.get("checkpoints"), set(registry.methods)),
        seeds=seeds,
        budget=resolve_budget(values.get("budget", "demo")),
        device=_choice("device", values.get("device", "auto"), DEVICES),
        data_root=Path(data_root).expanduser() if data_root else None,
        results=_results_folder(values.get("results", "results"), read_only),
        overwrite=_choice("overwrite", values.get("overwrite", "missing"), OVERWRITE_POLICIES),
        label_fractions=_label_fractions(values["label_fractions"]) if "label_fractions" in values else None,
        encoder=encoder,
        pools=_pools(values.get("pools", {})),
        protocols=_protocols(values.get("protocols"), registry),
        executor=_choice("executor", values.get("executor", "inline"), EXECUTORS),
        slurm=_slurm(file_values.get("slurm"), overrides.get("slurm") or {}),
        common_random_numbers=_flag("common_random_numbers", values.get("common_random_numbers", True)),
    )


def make_method(registry: Registry, name: str, options: dict[str, object]) -> Method:
    """Instantiate method ``name`` with ``options``, checking names and types against its Options."""
    cls = registry.method(name)
    typed = _typed_values(f"method {name!r}", cls.Options(), options)
    try:
        return cls(cls.Options(**typed))
    except ValueError as error:  # a plugin's range check that does not raise ConfigError itself
        raise ConfigError(f"method {name!r}: {error}") from error


def protocol_settings(name: str, base: object, overrides: dict[str, object]) -> object:
    """``base`` (the budget's settings of protocol ``name``) with ``overrides``, names and types checked."""
    typed = _typed_values(f"protocol {name!r}", base, overrides)
    try:
        return dataclasses.replace(base, **typed)
    except ValueError as error:
        raise ConfigError(f"protocol {name!r}: {error}") from error


def _typed_values(owner: str, defaults: object, values: dict[str, object]) -> dict[str, object]:
    """``values`` checked against the fields of the dataclass instance ``defaults``; ints accepted for floats."""
    fields = [f.name for f in dataclasses.fields(defaults)]
    described = ", ".join(f"{n} (default {getattr(defaults, n)!r})" for n in fields) or "none"
    typed = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{owner} has no option {key!r}; its options: {described}.")
        default = getattr(defaults, key)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)  # TOML has arrays, the settings tuples (hashable, frozen)
        if default is not None:
            accepted = (int, float) if isinstance(default, float) else type(default)
            if not isinstance(value, accepted) or isinstance(value, bool) != isinstance(default, bool):
                raise ConfigError(f"option {key} of {owner} must be {type(default).__name__}; got {value!r}.")
        typed[key] = float(value) if isinstance(default, float) else value
    return typed
