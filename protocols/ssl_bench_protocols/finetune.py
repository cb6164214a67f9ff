"""``finetune``: everything trained, starting from the frozen phase's selected model (LD's phase 2).

Segmentation continues from ``frozen``'s best checkpoint, classification from ``linear-probe``'s, with a fresh
Adam; the epoch with the best validation loss is kept. A method without pretraining (``scratch``) follows the
released random-init baseline (``STEP2_random_initialization.py``): the whole network trained end to end once,
for the fine-tune epochs, with no frozen phase before it.
"""

from __future__ import annotations

from ssl_bench.api import SupervisedProtocol, Task, hookimpl

#: The protocol whose selected model fine-tuning starts from, per task kind.
_FROZEN_PHASE = {"segmentation": "frozen", "classification": "linear-probe"}


class Finetune(SupervisedProtocol):
    name = "finetune"
    description = "everything trained, from the frozen phase's best model (LD's phase 2); scratch end to end"
    task_kinds = ("segmentation", "classification")
    frozen_encoder = False

    def continues_from(self, task: Task, pretrained: bool) -> str | None:
        return _FROZEN_PHASE[task.kind] if pretrained else None


@hookimpl
def ssl_bench_register_protocols(register):
    register(Finetune)
