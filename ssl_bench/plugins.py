"""Finds plugins through the ``ssl_bench`` entry-point group and collects what they register.

Entry points load in order of name, each on its own, so that one broken plugin is reported and skipped
while the rest keep working. ``SSL_BENCH_PLUGINS`` (comma-separated entry-point names) is an allow
list; ``SSL_BENCH_DISABLE_PLUGINS`` a deny list.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import pluggy

from ssl_bench import hookspecs
from ssl_bench.errors import PluginError
from ssl_bench.method import Method
from ssl_bench.task import Pool, Task

ENTRY_POINT_GROUP = "ssl_bench"


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, or why it failed."""

    name: str
    distribution: str
    version: str
    methods: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    pools: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Registry:
    """Everything the loaded plugins registered, by name."""

    methods: dict[str, type[Method]] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    pools: dict[str, Pool] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    #: registered name -> the plugin that registered it (for its version)
    owners: dict[str, PluginInfo] = field(default_factory=dict)

    def method(self, name: str) -> type[Method]:
        return _lookup(self.methods, name, "method", "ssl-bench list methods")

    def task(self, name: str) -> Task:
        return _lookup(self.tasks, name, "task", "ssl-bench list tasks")

    def plugin_version(self, name: str) -> str:
        """``distribution==version`` of the plugin that registered ``name``."""
        owner = self.owners[name]
        return f"{owner.distribution}=={owner.version}"


def _lookup(table: dict, name: str, kind: str, how_to_list: str):
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise PluginError(f"Unknown {kind} {name!r}.{hint} See `{how_to_list}` for the installed ones.")


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


def _validate_method(cls: object) -> str:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PluginError(f"register_methods got {cls!r}: expected a subclass of ssl_bench.api.Method")
    for attribute in ("name", "description"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise PluginError(f"method class {cls.__name__} needs a class attribute {attribute!r} (str)")
    return cls.name


def _validate_instance(obj: object, base: type) -> str:
    if not isinstance(obj, base):
        raise PluginError(f"got {obj!r}: expected an instance of ssl_bench.api.{base.__name__}")
    for attribute in ("name", "description", "modality", "channels"):
        if not hasattr(obj, attribute):
            raise PluginError(f"{type(obj).__name__} needs a class attribute {attribute!r}")
    return obj.name


def _collect(manager: pluggy.PluginManager, module: object, info: PluginInfo, registry: Registry) -> None:
    """Call the hooks of one plugin and stage what it registers; commit only if all of it is valid."""
    staged: dict[str, dict[str, object]] = {"methods": {}, "tasks": {}, "pools": {}}

    def stager(kind: str, validate):
        def register(obj: object) -> None:
            name = validate(obj)
            table = getattr(registry, kind)
            if name in table or name in staged[kind]:
                raise PluginError(f"{kind[:-1]} {name!r} is already registered by another plugin")
            staged[kind][name] = obj

        return register

    others = [p for p in manager.get_plugins() if p is not module]
    manager.subset_hook_caller("ssl_bench_register_methods", others)(register=stager("methods", _validate_method))
    manager.subset_hook_caller("ssl_bench_register_tasks", others)(
        register=stager("tasks", lambda t: _validate_instance(t, Task))
    )
    manager.subset_hook_caller("ssl_bench_register_pools", others)(
        register=stager("pools", lambda p: _validate_instance(p, Pool))
    )
    for kind, objects in staged.items():
        getattr(registry, kind).update(objects)
        getattr(info, kind).extend(objects)
        registry.owners.update(dict.fromkeys(objects, info))


def build_registry(entry_points: Iterable[importlib.metadata.EntryPoint]) -> Registry:
    """Load each selected entry point and collect its registrations, isolating failures."""
    registry = Registry()
    manager = _plugin_manager()
    # A fixed order makes name clashes resolve the same way everywhere: the later plugin fails.
    for entry_point in sorted(_selected(entry_points), key=lambda ep: (ep.name, ep.value)):
        dist = entry_point.dist
        info = PluginInfo(entry_point.name, dist.name if dist else "?", dist.version if dist else "?")
        registry.plugins.append(info)
        module = None
        try:
            module = entry_point.load()
            manager.register(module, name=entry_point.name)
            manager.check_pending()
            _collect(manager, module, info, registry)
        except Exception as error:  # a broken plugin must never take the others down
            info.error = f"{type(error).__name__}: {error}"
            if module is not None and manager.is_registered(module):
                manager.unregister(module)
    return registry


@functools.cache
def get_registry() -> Registry:
    """The registry of all installed plugins (loaded once per process)."""
    return build_registry(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
