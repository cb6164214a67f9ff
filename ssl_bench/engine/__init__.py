"""The engine that runs jobs (:mod:`.engine`: claim, run, record) and what it records of each (:mod:`.provenance`)."""

from ssl_bench.engine.engine import Engine, RunSummary, job_is_done, resolve_device

__all__ = ["Engine", "RunSummary", "job_is_done", "resolve_device"]
