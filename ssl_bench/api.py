"""The public API for plugins. Method and task plugins import from here and nowhere else in ssl_bench.

- Contracts: :class:`Method` (with :class:`Stage`), :class:`Task`, :class:`Pool`, and ``hookimpl``.
- Data types: :class:`SegmentationSplit`, :class:`SegmentationData`, :class:`Availability`.
- Shared networks: :func:`create_encoder` (``vgg16_bn_tiny`` or any timm model), :class:`UNet`.
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
from ssl_bench.data.phantoms import PhantomSet, make_cxr, make_fundus
from ssl_bench.data.prepared import prepared_arrays
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.hookspecs import hookimpl
from ssl_bench.method import Method, NoOptions, Stage
from ssl_bench.models import Encoder, FeatureInfo, UNet, create_encoder
from ssl_bench.task import (
    Availability,
    ClassificationData,
    ClassificationSplit,
    Pool,
    SegmentationData,
    SegmentationSplit,
    Task,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Availability",
    "ClassificationData",
    "ClassificationSplit",
    "ConfigError",
    "DataError",
    "Encoder",
    "FeatureInfo",
    "Method",
    "NoOptions",
    "PhantomSet",
    "Pool",
    "SegmentationData",
    "SegmentationSplit",
    "Stage",
    "Task",
    "UNet",
    "augment",
    "create_encoder",
    "crop",
    "fundus_roi_box",
    "hookimpl",
    "make_cxr",
    "make_fundus",
    "normalize",
    "prepared_arrays",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
]
