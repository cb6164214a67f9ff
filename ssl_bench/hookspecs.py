"""The hooks a plugin implements. Each receives a ``register`` callable and calls it once per item.

Methods and protocols register classes (their options/settings make variants); tasks and pools register
instances.

A plugin module looks like this (see ``examples/ssl-bench-example-plugin``)::

    from ssl_bench.api import hookimpl, Method

    class MyMethod(Method):
        ...

    @hookimpl
    def ssl_bench_register_methods(register):
        register(MyMethod)
"""

from collections.abc import Callable, Mapping

import pluggy

hookspec = pluggy.HookspecMarker("ssl_bench")
hookimpl = pluggy.HookimplMarker("ssl_bench")


@hookspec
def ssl_bench_register_methods(register: Callable[[type], None]) -> None:
    """Register pretraining methods: call ``register(cls)`` for each ``ssl_bench.api.Method`` subclass."""


@hookspec
def ssl_bench_register_tasks(register: Callable[[object], None], task_tables: Mapping[str, Mapping]) -> None:
    """Register downstream tasks: call ``register(task)`` for each ``ssl_bench.api.Task`` instance.

    ``task_tables`` (an implementation takes it only if it declares it) holds the tasks the run file defines, its
    ``[tasks.NAME]`` tables with a ``type`` key, by name: a plugin registers those of the types it knows (the
    folder tasks plugin: ``type = "folder"``)."""


@hookspec
def ssl_bench_register_pools(register: Callable[[object], None]) -> None:
    """Register unlabelled pretraining pools: call ``register(pool)`` for each ``ssl_bench.api.Pool``."""


@hookspec
def ssl_bench_register_protocols(register: Callable[[type], None]) -> None:
    """Register downstream protocols: call ``register(cls)`` for each ``ssl_bench.api.Protocol`` subclass."""
