"""``inline``: the plan runs in this process, one job after another (the default)."""

from __future__ import annotations

from ssl_bench.config import RunConfig
from ssl_bench.engine import Engine, RunSummary, resolve_device
from ssl_bench.planning import Plan


class Inline:
    """:class:`ssl_bench.engine.Engine` on this process's device."""

    def __init__(
        self,
        config: RunConfig,
        *,
        progress: bool = True,
        echo=print,
        fail_fast: bool = False,
        retry_failed: bool = False,
    ) -> None:
        self.config, self.progress, self.echo = config, progress, echo
        self.fail_fast, self.retry_failed = fail_fast, retry_failed

    def run(self, plan: Plan) -> RunSummary:
        engine = Engine(
            self.config,
            resolve_device(self.config.device),
            progress=self.progress,
            echo=self.echo,
            fail_fast=self.fail_fast,
            retry_failed=self.retry_failed,
        )
        return engine.run(plan)
