"""Barlow Twins (Zbontar et al., ICML 2021) on the shared encoder.

The cross-correlation matrix of the two views' batch-standardised projections is pushed towards the
identity: its diagonal to one (invariance), the rest to zero (redundancy reduction) (lightly's Barlow Twins
projection head and loss).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with Barlow
Twins' 3-layer projector and off-diagonal weight 5e-3. Changed from Barlow Twins: a projector 2048 wide,
not 8192 (the shared encoder is ~1M parameters, an 8192 one ~135M); Adam as LD, not LARS at batch
2048.
"""

from dataclasses import dataclass

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules.heads import BarlowTwinsProjectionHead
from torch import nn

from ssl_bench.api import hookimpl, require_positive
from ssl_bench_methods._global import TwoViewMethod


@dataclass(frozen=True)
class BarlowTwinsOptions:
    projection_dim: int = 2048
    off_diagonal_weight: float = 5e-3

    def __post_init__(self) -> None:
        require_positive(self, ("projection_dim", "off_diagonal_weight"), "barlowtwins")


class BarlowTwins(TwoViewMethod):
    name = "barlowtwins"
    bf16_safe = True
    description = "Barlow Twins: the views' cross-correlation matrix towards identity (lightly head and loss)."
    Options = BarlowTwinsOptions

    def __init__(self, options: BarlowTwinsOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = BarlowTwinsLoss(lambda_param=self.options.off_diagonal_weight)

    def projection_head(self, input_dim: int) -> nn.Module:
        return BarlowTwinsProjectionHead(input_dim, self.options.projection_dim, self.options.projection_dim)


@hookimpl
def ssl_bench_register_methods(register):
    register(BarlowTwins)
