"""SimCLR (Chen et al., ICML 2020) on the shared encoder, from lightly's projection head and NT-Xent loss.

The deepest encoder feature is average-pooled and projected; two augmented views of each source image are
positives, every other view in the batch a negative.

Schedules: those of every global baseline (``_global.py``): ``demo`` a few hundred images; ``paper`` LD's
published budget (Chen et al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px crops) with 32 source
images per step, since SimCLR needs many negatives. Changed from SimCLR: Adam as LD, not LARS at batch 4096,
which does not fit medical pools of a few thousand images.
"""

from dataclasses import dataclass

from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from ssl_bench.api import hookimpl, require_positive
from ssl_bench_methods._global import TwoViewMethod


@dataclass(frozen=True)
class SimCLROptions:
    temperature: float = 0.5
    projection_dim: int = 128

    def __post_init__(self) -> None:
        require_positive(self, ("temperature", "projection_dim"), "simclr")


class SimCLR(TwoViewMethod):
    name = "simclr"
    bf16_safe = True
    description = "SimCLR: global contrastive learning of two views (lightly head and NT-Xent loss)."
    Options = SimCLROptions

    def __init__(self, options: SimCLROptions | None = None) -> None:
        super().__init__(options)
        self.criterion = NTXentLoss(temperature=self.options.temperature)

    def projection_head(self, input_dim: int) -> nn.Module:
        return SimCLRProjectionHead(input_dim, 4 * input_dim, self.options.projection_dim)


@hookimpl
def ssl_bench_register_methods(register):
    register(SimCLR)
