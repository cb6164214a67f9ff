"""VICReg (Bardes, Ponce & LeCun, ICLR 2022) on the shared encoder.

The two views' projections must agree (invariance) while every dimension keeps a standard deviation of
at least one over the batch (variance) and different dimensions stay uncorrelated (covariance) (lightly's
VICReg projection head and loss).

Schedules: those of every global baseline (``_global.py``); ``paper`` is LD's published budget (Chen et
al. 2021: 100 epochs x 1000 iterations, Adam 1e-3, 448 px) at 32 source images per step, with VICReg's
3-layer projector and weights 25 (invariance), 25 (variance), 1 (covariance). Changed from VICReg: a
projector 2048 wide, not 8192 (the shared encoder is ~1M parameters); Adam as LD, not LARS at batch 2048.
"""

from dataclasses import dataclass

from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import nn

from ssl_bench.api import hookimpl
from ssl_bench_methods._global import TwoViewMethod


@dataclass(frozen=True)
class VICRegOptions:
    projection_dim: int = 2048
    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0


class VICReg(TwoViewMethod):
    name = "vicreg"
    bf16_safe = True
    description = "VICReg: invariance of two views with variance and covariance regularisers (lightly)."
    Options = VICRegOptions

    def __init__(self, options: VICRegOptions | None = None) -> None:
        super().__init__(options)
        self.criterion = VICRegLoss(
            lambda_param=self.options.invariance_weight,
            mu_param=self.options.variance_weight,
            nu_param=self.options.covariance_weight,
        )

    def projection_head(self, input_dim: int) -> nn.Module:
        return VICRegProjectionHead(input_dim, self.options.projection_dim, self.options.projection_dim)


@hookimpl
def ssl_bench_register_methods(register):
    register(VICReg)
