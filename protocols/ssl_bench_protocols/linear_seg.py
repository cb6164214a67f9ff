"""``linear-seg``: a linear probe per pixel on the frozen encoder's multi-scale features.

Every encoder stage's feature map is upsampled (bilinear) to the input size, the maps are concatenated and
standardised per channel, and one 1x1 conv maps them to a logit: what a linear probe is to classification, for
segmentation. It measures how linearly decodable the target is from the features at each pixel, with no decoder
to make up for what pretraining did not learn. Trained by the shared supervised loop (LD's soft Dice loss, the
epoch with the best validation loss kept); the encoder is frozen (no gradients, BatchNorm statistics untouched).

Settings. ``demo``: 96 px, 8 epochs, batch 4 (the ``frozen`` demo's schedule) at Adam 1e-2: a linear probe on
standardised features has one layer of small weights to move, and at 1e-3 it had not converged in 12 epochs.
``paper`` scale: 512 px, 100 epochs, the task's paper batch size (LD's transfer schedule, so that the probe
gets the same images, resolution and updates as ``frozen`` and ``finetune``), at the same 1e-2.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from ssl_bench.api import Budget, Context, Encoder, Metric, Outcome, Protocol, Task, hookimpl
from ssl_bench.api.supervised import SupervisedSettings, standard_settings, supervised_metrics, supervised_transfer
from ssl_bench_protocols._multiscale import MultiScaleLinear

PROBE_LR = 1e-2


class LinearSegModel(nn.Module):
    """The encoder, a parameter-free per-channel standardisation of each stage, and a :class:`MultiScaleLinear`
    to one logit: ``forward`` returns logits ``(N, 1, H, W)``."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        # Stages differ in scale by orders of magnitude; standardising them (as MAE's probe does) lets one
        # learning rate suit every weight. Parameter-free, it adds nothing the 1x1 conv could not express.
        # The cumulative average (momentum None) is the exact mean of the batch statistics: the frozen encoder's
        # features do not drift, and the default 0.1 would still remember the init after a short demo run.
        self.norms = nn.ModuleList(
            nn.BatchNorm2d(info.channels, affine=False, momentum=None) for info in encoder.feature_info
        )
        self.head = MultiScaleLinear(encoder.feature_info, outputs=1)

    def forward(self, images: Tensor) -> Tensor:
        features = [norm(feature) for norm, feature in zip(self.norms, self.encoder(images), strict=True)]
        return self.head(features, size=images.shape[-2:])


class LinearSeg(Protocol):
    name = "linear-seg"
    description = "a 1x1-conv probe on the frozen encoder's upsampled multi-scale features"
    task_kinds = ("segmentation",)
    frozen_encoder = True

    def settings(self, budget: Budget, task: Task) -> SupervisedSettings:
        return dataclasses.replace(standard_settings(budget, task), lr=PROBE_LR)

    def metrics(self, task: Task) -> tuple[Metric, ...]:
        return supervised_metrics(task)

    def run(self, context: Context) -> Outcome:
        return supervised_transfer(context, train_encoder=False, build_model=LinearSegModel)


@hookimpl
def ssl_bench_register_protocols(register):
    register(LinearSeg)
