"""The method contract's shared pieces: variant labels, the matched schedule, what method plugins import."""

from dataclasses import dataclass

from ssl_bench.method import MATCHED_BATCH_SIZE, MATCHED_STEPS, Method, Stage, non_default_options, schedule


@dataclass(frozen=True)
class ToyOptions:
    temperature: float = 0.5
    dim: int = 128


class TwoStages(Method):
    name = "toy"
    description = "two stages, a quarter and three quarters of its paper steps"
    Options = ToyOptions

    def stages(self, profile):
        if profile == "paper":
            return [Stage("a", 5, 200, 32, 448, 1e-3), Stage("b", 30, 100, 16, 224, 1e-4)]
        return [Stage("a", 1, 2, 4, 32, 1e-3)]


def test_matched_schedule_gives_the_shared_budget_in_the_same_proportions():
    a, b = schedule(TwoStages(), "matched")
    # Paper steps: a 1000, b 3000 -> shares 1/4 and 3/4 of 100,000 steps of 1000 per epoch.
    assert (a.epochs, b.epochs) == (25, 75)
    assert a.epochs * a.steps_per_epoch + b.epochs * b.steps_per_epoch == MATCHED_STEPS
    assert a.batch_size == b.batch_size == MATCHED_BATCH_SIZE == 8
    assert (a.image_size, a.lr, b.image_size, b.lr) == (448, 1e-3, 224, 1e-4)
    assert schedule(TwoStages(), "demo") == TwoStages().stages("demo")


def test_variant_names_only_the_options_that_differ():
    assert TwoStages().variant == "toy"
    assert TwoStages(ToyOptions(temperature=0.2)).variant == "toy(temperature=0.2)"
    assert non_default_options(ToyOptions(dim=64, temperature=0.5)) == {"dim": 64}
