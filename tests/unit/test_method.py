"""The method contract's shared pieces: variant labels and what method plugins import."""

from dataclasses import dataclass

from ssl_bench.method import Method, Stage, non_default_options


@dataclass(frozen=True)
class ToyOptions:
    temperature: float = 0.5
    dim: int = 128


class TwoStages(Method):
    name = "toy"
    description = "two stages, a quarter and three quarters of its paper steps"
    Options = ToyOptions

    def stages(self, scale):
        if scale == "paper":
            return [Stage("a", 5, 200, 32, 448, 1e-3), Stage("b", 30, 100, 16, 224, 1e-4)]
        return [Stage("a", 1, 2, 4, 32, 1e-3)]


def test_variant_names_only_the_options_that_differ():
    assert TwoStages().variant == "toy"
    assert TwoStages(ToyOptions(temperature=0.2)).variant == "toy(temperature=0.2)"
    assert non_default_options(ToyOptions(dim=64, temperature=0.5)) == {"dim": 64}
