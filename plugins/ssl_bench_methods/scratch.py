"""Random initialisation: no pretraining. The reference every method must beat."""

from ssl_bench.api import Method, Stage, hookimpl


class Scratch(Method):
    name = "scratch"
    description = "Random initialisation (no pretraining): the reference baseline."

    def stages(self, scale: str) -> list[Stage]:
        return []


@hookimpl
def ssl_bench_register_methods(register):
    register(Scratch)
