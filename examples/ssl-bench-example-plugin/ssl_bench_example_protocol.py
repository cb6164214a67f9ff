"""An example ssl-bench protocol plugin: a linear probe on the encoder's deepest feature alone.

It shows the three parts of a protocol: settings per budget (a frozen dataclass; changed values name the
variant, e.g. ``deep-probe(lr=0.1)``), the metrics it reports (the first is the headline), and ``run``, here
the shared supervised loop with a model of its own.
"""

import dataclasses

import torch.nn.functional as F
from torch import nn

from ssl_bench.api import Budget, Protocol, hookimpl
from ssl_bench.api.supervised import SupervisedSettings, standard_settings, supervised_metrics, supervised_transfer


class DeepProbe(nn.Module):
    """A 1x1 conv on the deepest feature, upsampled to the input: how much the bottleneck alone knows."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder  # the shared loop freezes or trains exactly this module
        self.probe = nn.Conv2d(encoder.feature_info[-1].channels, 1, kernel_size=1)

    def forward(self, images):
        logits = self.probe(self.encoder(images)[-1])
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


class DeepProbeProtocol(Protocol):
    name = "deep-probe"
    description = "Example plugin: a linear probe on the deepest feature alone"
    task_kinds = ("segmentation",)
    frozen_encoder = True

    def settings(self, budget: Budget, task) -> SupervisedSettings:
        return dataclasses.replace(standard_settings(budget, task), lr=1e-2)

    def metrics(self, task):
        return supervised_metrics(task)  # Dice (the headline) and IoU

    def run(self, context):
        return supervised_transfer(context, train_encoder=False, build_model=DeepProbe)


@hookimpl
def ssl_bench_register_protocols(register):
    register(DeepProbeProtocol)
