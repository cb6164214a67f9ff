"""Supervised transfer for protocols: the one training loop (seeded init, selection on validation data only, NaN
guard, resumable), the protocol base built on it, the published schedules, and LD's labelled splits and scores."""

from ssl_bench.supervised.loop import SupervisedSettings, fit, seeded_init, standard_settings
from ssl_bench.supervised.protocol import SupervisedProtocol, supervised_metrics, supervised_transfer
from ssl_bench.supervised.segmentation import mask_scores, resize_split, segmentation_splits

__all__ = [
    "SupervisedProtocol",
    "SupervisedSettings",
    "fit",
    "mask_scores",
    "resize_split",
    "seeded_init",
    "segmentation_splits",
    "standard_settings",
    "supervised_metrics",
    "supervised_transfer",
]
