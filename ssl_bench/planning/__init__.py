"""Planning: what a run is (:mod:`.identity`: jobs and pretraining named by the hash of their spec) and how it is
laid out (:mod:`.plan`: every job of the run, in an order the engine can follow)."""

from ssl_bench.planning.identity import Job, Plan, Pretraining, TaskData, digest, seed_of
from ssl_bench.planning.plan import build_plan, label_fractions

__all__ = [
    "Job",
    "Plan",
    "Pretraining",
    "TaskData",
    "build_plan",
    "digest",
    "label_fractions",
    "seed_of",
]
