"""The public API for plugins. Method, task and protocol plugins import from here and nowhere else in ssl_bench.

- Contracts: :class:`Method` (with :class:`Stage`), :class:`Task`, :class:`Pool`, :class:`Protocol` (with
  :class:`Context`, :class:`Outcome`, :class:`Scores`, :class:`Selection`, :class:`Metric`; its base
  :class:`FrozenFeatureProtocol` for one that never trains the encoder), and ``hookimpl``.
- Data types: :class:`SegmentationSplit` (optionally with landmark points, named by :attr:`Task.landmarks`),
  :class:`SegmentationData`, :class:`Availability`.
- Downstream building blocks: :class:`SupervisedProtocol`, :func:`supervised_transfer` (the one training loop,
  selection on validation, NaN guard), :func:`standard_settings`, :func:`segmentation_splits` (LD's split of the
  labelled subset, resized), :func:`mask_scores` (per-image Dice and IoU of predicted masks),
  :func:`require_whole_numbers`, :func:`require_positive` and :func:`require_fractions` for settings and
  options.
- Shared networks: :func:`create_encoder` (``vgg16_bn_tiny`` or any timm model), :class:`UNet`.
- LD's region clustering (``ld`` and ``shape-guided``): :func:`cluster_assignment`, :func:`region_features`,
  :func:`local_discrimination_loss`, :func:`entropy_loss`, :func:`l2_normalize`.
- Batched tensor augmentations (``augment``), image reading and LD preprocessing helpers, phantoms.
"""

from ssl_bench import augment
from ssl_bench.augment import normalize
from ssl_bench.data.imageio import (
    IMAGE_SUFFIXES,
    crop,
    fundus_roi_box,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)
from ssl_bench.data.phantoms import FUNDUS_LANDMARKS, PhantomSet, make_angiogram, make_cxr, make_fundus
from ssl_bench.data.prepared import prepared_arrays
from ssl_bench.errors import ConfigError, DataError, require_fractions, require_positive, require_whole_numbers
from ssl_bench.hookspecs import hookimpl
from ssl_bench.method import Method, NoOptions, Stage
from ssl_bench.models import Encoder, FeatureInfo, UNet, create_encoder
from ssl_bench.protocol import Context, FrozenFeatureProtocol, Metric, Outcome, Protocol, Scores, Selection
from ssl_bench.regions import (
    NORM_EPS,
    at_least_fp32,
    cluster_assignment,
    entropy_loss,
    l2_normalize,
    local_discrimination_loss,
    region_features,
)
from ssl_bench.supervised.loop import SupervisedSettings, fit, seeded_init, standard_settings
from ssl_bench.supervised.protocol import SupervisedProtocol, supervised_metrics, supervised_transfer
from ssl_bench.supervised.segmentation import mask_scores, resize_split, segmentation_splits
from ssl_bench.task import (
    Availability,
    ClassificationData,
    ClassificationSplit,
    Pool,
    SegmentationData,
    SegmentationSplit,
    Task,
)

#: The version of this contract. Every name in ``__all__`` keeps its meaning and signature within a major version;
#: a name is removed or changed only with the next one. Anything not listed here is ssl-bench's internals.
API_VERSION = "1.1"

__all__ = [
    "API_VERSION",
    "FUNDUS_LANDMARKS",
    "IMAGE_SUFFIXES",
    "NORM_EPS",
    "Availability",
    "ClassificationData",
    "ClassificationSplit",
    "ConfigError",
    "Context",
    "DataError",
    "Encoder",
    "FeatureInfo",
    "FrozenFeatureProtocol",
    "Method",
    "Metric",
    "NoOptions",
    "Outcome",
    "PhantomSet",
    "Pool",
    "Protocol",
    "Scores",
    "SegmentationData",
    "SegmentationSplit",
    "Selection",
    "Stage",
    "SupervisedProtocol",
    "SupervisedSettings",
    "Task",
    "UNet",
    "at_least_fp32",
    "augment",
    "cluster_assignment",
    "create_encoder",
    "crop",
    "entropy_loss",
    "fit",
    "fundus_roi_box",
    "hookimpl",
    "l2_normalize",
    "local_discrimination_loss",
    "make_angiogram",
    "make_cxr",
    "make_fundus",
    "mask_scores",
    "normalize",
    "prepared_arrays",
    "read_image",
    "read_mask",
    "region_features",
    "require_fractions",
    "require_positive",
    "require_whole_numbers",
    "resize_image",
    "resize_mask",
    "resize_split",
    "seeded_init",
    "segmentation_splits",
    "standard_settings",
    "supervised_metrics",
    "supervised_transfer",
]
