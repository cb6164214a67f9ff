"""Finds plugins through the ``ssl_bench`` entry-point group and collects what they register.

Entry points load in order of name, each on its own, so that one broken plugin is reported and skipped
while the rest keep working. A name that two plugins register (as the same kind) is refused, naming both, rather
than settled by load order. ``SSL_BENCH_PLUGINS`` (comma-separated entry-point names) is an allow
list; ``SSL_BENCH_DISABLE_PLUGINS`` a deny list.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pluggy

from ssl_bench import hookspecs
from ssl_bench.errors import PluginError
from ssl_bench.method import Method
from ssl_bench.protocol import Protocol
from ssl_bench.stopping import stop_requested
from ssl_bench.task import Pool, Task

ENTRY_POINT_GROUP = "ssl_bench"


#: The kinds of things a plugin registers, each with its own hook and table.
KINDS = ("methods", "tasks", "pools", "protocols")


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, or why it failed."""

    name: str
    distribution: str
    version: str
    registered: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})"


@dataclass
class Registry:
    """Everything the loaded plugins registered: one table per kind, and which plugin owns each name."""

    methods: dict[str, type[Method]] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    protocols: dict[str, type[Protocol]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    #: kind -> registered name -> the plugin that registered it
    owners: dict[str, dict[str, PluginInfo]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    #: kind -> name registered by several plugins -> those plugins; such a name is refused, not guessed
    clashes: dict[str, dict[str, list[PluginInfo]]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    def method(self, name: str) -> type[Method]:
        return self._lookup("methods", name)

    def task(self, name: str) -> Task:
        return self._lookup("tasks", name)

    def protocol(self, name: str) -> type[Protocol]:
        return self._lookup("protocols", name)

    @property
    def failed(self) -> list[PluginInfo]:
        return [info for info in self.plugins if info.error]

    def plugin_version(self, kind: str, name: str) -> str:
        """``distribution==version`` of the plugin that registered ``name`` as a ``kind``."""
        owner = self.owners[kind][name]
        return f"{owner.distribution}=={owner.version}"

    def _lookup(self, kind: str, name: str):
        table = getattr(self, kind)
        if name in table:
            return table[name]
        if clash := self.clashes[kind].get(name):
            plugins = " and ".join(info.label for info in clash)
            raise PluginError(
                f"{kind[:-1]} {name!r} is registered by {plugins}, so it is refused rather than guessed; uninstall "
                f"one, or disable one with SSL_BENCH_DISABLE_PLUGINS={clash[-1].name} (entry-point names)"
            )
        close = difflib.get_close_matches(name, list(table), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        failed = "".join(
            f" Plugin {info.label} failed to load and may provide it: {info.error}." for info in self.failed
        )
        raise PluginError(
            f"Unknown {kind[:-1]} {name!r}.{hint}{failed}{_filter_note()} See `ssl-bench list {kind}` and "
            "`ssl-bench plugins`."
        )


def _filter_note() -> str:
    """What SSL_BENCH_PLUGINS / SSL_BENCH_DISABLE_PLUGINS leave out, for an error about a name they may hide."""
    installed = sorted({entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
    notes = []
    if (allowed := _env_names("SSL_BENCH_PLUGINS")) is not None:
        notes.append(f" SSL_BENCH_PLUGINS loads only the plugins it names ({', '.join(sorted(allowed))})")
        if missing := sorted(allowed - set(installed)):
            notes.append(f", and no installed plugin is called {', '.join(missing)}")
        notes.append(f"; the installed plugins are {', '.join(installed)}.")
    if denied := _env_names("SSL_BENCH_DISABLE_PLUGINS"):
        notes.append(f" SSL_BENCH_DISABLE_PLUGINS leaves out {', '.join(sorted(denied))}.")
    return "".join(notes)


def _env_names(variable: str) -> set[str] | None:
    value = os.environ.get(variable, "").strip()
    return {name.strip() for name in value.split(",") if name.strip()} if value else None


def _selected(entry_points: Iterable[importlib.metadata.EntryPoint]):
    allowed = _env_names("SSL_BENCH_PLUGINS")
    denied = _env_names("SSL_BENCH_DISABLE_PLUGINS") or set()
    for entry_point in entry_points:
        if (allowed is None or entry_point.name in allowed) and entry_point.name not in denied:
            yield entry_point


def _plugin_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("ssl_bench")
    manager.add_hookspecs(hookspecs)
    return manager


def _validate_class(cls: object, base: type) -> str:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(f"got {cls!r}: expected a subclass of ssl_bench.api.{base.__name__}")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise PluginError(
                f"{base.__name__.lower()} class {cls.__name__} needs a class attribute {attribute!r} (str)"
            )
    return cls.name


def _validate_instance(obj: object, base: type) -> str:
    if not isinstance(obj, base):
        raise PluginError(f"got {obj!r}: expected an instance of ssl_bench.api.{base.__name__}")
    for attribute in ("name", "description", "modality", "channels"):
        if not hasattr(obj, attribute):
            raise PluginError(f"{type(obj).__name__} needs a class attribute {attribute!r}")
    return obj.name


_VALIDATORS = {
    "methods": lambda obj: _validate_class(obj, Method),
    "tasks": lambda obj: _validate_instance(obj, Task),
    "pools": lambda obj: _validate_instance(obj, Pool),
    "protocols": lambda obj: _validate_class(obj, Protocol),
}


def _collect(
    manager: pluggy.PluginManager, module: object, info: PluginInfo, registry: Registry, task_tables: Mapping
) -> None:
    """Call the hooks of one plugin and stage what it registers; commit only if all of it is valid."""
    staged: dict[str, dict[str, object]] = {kind: {} for kind in KINDS}

    def stager(kind: str):
        def register(obj: object) -> None:
            name = _VALIDATORS[kind](obj)
            if name in staged[kind]:
                raise PluginError(f"{kind[:-1]} {name!r} is registered twice by this plugin")
            staged[kind][name] = obj

        return register

    others = [p for p in manager.get_plugins() if p is not module]
    for kind in KINDS:
        extra = {"task_tables": task_tables} if kind == "tasks" else {}
        manager.subset_hook_caller(f"ssl_bench_register_{kind}", others)(register=stager(kind), **extra)
    for kind, objects in staged.items():
        info.registered[kind].extend(objects)
        for name, obj in objects.items():
            _add(registry, kind, name, obj, info)


def _add(registry: Registry, kind: str, name: str, obj: object, info: PluginInfo) -> None:
    """Register ``name``; a name another plugin already has is taken from both and kept as a clash."""
    table, owners, clashes = getattr(registry, kind), registry.owners[kind], registry.clashes[kind]
    if name in clashes:
        clashes[name].append(info)
    elif name in owners:
        clashes[name] = [owners.pop(name), info]
        del table[name]
    else:
        table[name], owners[name] = obj, info


def build_registry(
    entry_points: Iterable[importlib.metadata.EntryPoint], task_tables: Mapping[str, Mapping] | None = None
) -> Registry:
    """Load each selected entry point and collect its registrations, isolating failures; ``task_tables`` are the
    tasks a run file defines (see ``ssl_bench_register_tasks``)."""
    registry = Registry()
    manager = _plugin_manager()
    for entry_point in sorted(_selected(entry_points), key=lambda ep: (ep.name, ep.value)):
        dist = entry_point.dist
        info = PluginInfo(entry_point.name, dist.name if dist else "?", dist.version if dist else "?")
        registry.plugins.append(info)
        module = None
        try:
            module = entry_point.load()
            manager.register(module, name=entry_point.name)
            manager.check_pending()
            _collect(manager, module, info, registry, task_tables or {})
        except Exception as error:  # a broken plugin must never take the others down
            if stop_requested():
                raise KeyboardInterrupt from error  # a stop that landed in its import: not the plugin's fault
            info.error = f"{type(error).__name__}: {error}"
            if module is not None and manager.is_registered(module):
                manager.unregister(module)
    return registry


def get_registry(task_tables: Mapping[str, Mapping] | None = None) -> Registry:
    """The registry of all installed plugins, with the tasks ``task_tables`` define (built once per process and
    tables)."""
    return _registry_of(json.dumps(task_tables or {}, sort_keys=True))


@functools.cache
def _registry_of(task_tables: str) -> Registry:
    return build_registry(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), json.loads(task_tables))


def forget_registries() -> None:
    """Load the plugins again at the next :func:`get_registry` (after installing one, say)."""
    _registry_of.cache_clear()
