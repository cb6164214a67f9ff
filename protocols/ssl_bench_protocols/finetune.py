"""``finetune``: everything trained, starting from the frozen phase's selected model (LD's phase 2).

Segmentation continues from ``frozen``'s best checkpoint, classification from ``linear-probe``'s, with a fresh
Adam; the epoch with the best validation loss is kept. A method without pretraining (``scratch``) follows the
released random-init baseline (``STEP2_random_initialization.py``): the whole network trained end to end once,
for the fine-tune epochs, with no frozen phase before it. A pretrained method so trains for the frozen phase's
epochs and then the fine-tune epochs, scratch for the fine-tune epochs only; the setting ``equal_budget = true``
gives scratch both (``frozen_epochs + epochs``, end to end), and names the variant ``finetune(equal_budget=True)``.

Settings. ``demo``, segmentation: half the frozen phase's epochs (4 after 8), with ``equal_budget`` (scratch 12).
Otherwise the frozen phase's schedule again (``paper``: 100 epochs after 100).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ssl_bench.api import Budget, Context, Outcome, Task, hookimpl, require_whole_numbers
from ssl_bench.api.supervised import SupervisedProtocol, SupervisedSettings, standard_settings, supervised_transfer

#: The protocol whose selected model fine-tuning starts from, per task kind.
_FROZEN_PHASE = {"segmentation": "frozen", "classification": "linear-probe"}


@dataclass(frozen=True, kw_only=True)
class FinetuneSettings(SupervisedSettings):
    """The fine-tune schedule, the frozen phase's epochs (the published schedule's, as ``frozen`` and
    ``linear-probe`` run it: change both together), and whether scratch gets them too."""

    frozen_epochs: int
    equal_budget: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require_whole_numbers(self, {"frozen_epochs": 1}, "finetune")

    @classmethod
    def after(cls, frozen_phase: SupervisedSettings, **changes: object) -> FinetuneSettings:
        """Fine-tuning on the frozen phase's schedule (its epochs again), with ``changes`` to any field."""
        return cls(**{**dataclasses.asdict(frozen_phase), "frozen_epochs": frozen_phase.epochs, **changes})

    def epochs_for(self, pretrained: bool) -> int:
        """A run's epochs: a pretrained method's frozen phase ran before; scratch gets it here if ``equal_budget``."""
        return self.epochs + self.frozen_epochs if self.equal_budget and not pretrained else self.epochs


class Finetune(SupervisedProtocol):
    name = "finetune"
    description = (
        "everything trained, from the frozen phase's best model (LD's phase 2); scratch end to end for the fine-tune "
        "epochs, or with equal_budget for the frozen phase's epochs too"
    )
    task_kinds = ("segmentation", "classification")
    frozen_encoder = False
    version = "2"  # 2: the classification head's batch norm keeps cumulative statistics

    def settings(self, budget: Budget, task: Task) -> FinetuneSettings:
        frozen_phase = standard_settings(budget, task)
        if budget.scale == "demo" and task.kind == "segmentation":
            # Half the frozen phase, scratch getting both phases' epochs: the supervised jobs are most of the
            # quickstart's time, and scratch, trained end to end from random weights, needs the longer schedule.
            return FinetuneSettings.after(frozen_phase, epochs=max(frozen_phase.epochs // 2, 1), equal_budget=True)
        return FinetuneSettings.after(frozen_phase)

    def continues_from(self, task: Task, pretrained: bool) -> str | None:
        return _FROZEN_PHASE[task.kind] if pretrained else None

    def run(self, context: Context) -> Outcome:
        settings = context.settings
        schedule = dataclasses.replace(settings, epochs=settings.epochs_for(context.pretrained))
        return supervised_transfer(dataclasses.replace(context, settings=schedule), train_encoder=True)


@hookimpl
def ssl_bench_register_protocols(register):
    register(Finetune)
