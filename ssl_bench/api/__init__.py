"""The public API for plugins: method, task and protocol plugins import from here and nowhere else in ssl_bench.

This module is the contract a plugin implements and the types it exchanges with the harness:

- Methods: :class:`Method` (its :class:`Stage` schedule, :class:`NoOptions`), registered with ``hookimpl``.
- Tasks: :class:`Task` and :class:`Pool`, their data (:class:`SegmentationData` of :class:`SegmentationSplit`,
  optionally with landmark points; :class:`ClassificationData` of :class:`ClassificationSplit`), :class:`Availability`.
- Protocols: :class:`Protocol` (:class:`FrozenFeatureProtocol` for one that never trains the encoder), its settings
  per :class:`Budget`, the
  :class:`Context` it gets and the :class:`Outcome` (:class:`Scores`, :class:`Selection`) it returns for its
  :class:`Metric` s; :class:`Encoder`, what a protocol is given.
- Errors a plugin raises for a clear one-line message (:class:`ConfigError`, :class:`DataError`) and the checks
  its options and settings use (:func:`require_positive`, :func:`require_fractions`, :func:`require_whole_numbers`).

Building blocks live in named sub-modules, so that the contract stays small:

- :mod:`ssl_bench.api.nets`: the shared encoder (``vgg16_bn_tiny`` or any timm model) and the U-Net around it.
- :mod:`ssl_bench.api.augment`: batched tensor augmentations, seeded by a CPU generator.
- :mod:`ssl_bench.api.supervised`: the one supervised loop and the protocol base built on it.
- :mod:`ssl_bench.api.regions`: LD's region clustering and losses (``ld``, ``shape-guided``).
- :mod:`ssl_bench.api.data`: image and mask reading, LD's preprocessing, the prepared-array cache, phantoms.

API 2.0: ``Protocol.settings`` takes the run's :class:`Budget` (1.x: a profile's name; ``budget.scale`` is what that
name was), and the building blocks that 1.x exported flat are only in their sub-modules (asking for one here says
where it went).
"""

from ssl_bench.api import augment, data, nets, regions, supervised
from ssl_bench.budget import Budget
from ssl_bench.errors import ConfigError, DataError, require_fractions, require_positive, require_whole_numbers
from ssl_bench.hookspecs import hookimpl
from ssl_bench.method import Method, NoOptions, Stage
from ssl_bench.models import Encoder
from ssl_bench.protocol import Context, FrozenFeatureProtocol, Metric, Outcome, Protocol, Scores, Selection
from ssl_bench.task import (
    Availability,
    ClassificationData,
    ClassificationSplit,
    Pool,
    SegmentationData,
    SegmentationSplit,
    Task,
)

#: The version of this contract. Every name in ``__all__`` (and in the sub-modules' ``__all__``) keeps its meaning
#: and signature within a major version; a name is removed or changed only with the next one. Anything not listed
#: is ssl-bench's internals.
API_VERSION = "2.0"

__all__ = [
    "API_VERSION",
    "Availability",
    "Budget",
    "ClassificationData",
    "ClassificationSplit",
    "ConfigError",
    "Context",
    "DataError",
    "Encoder",
    "FrozenFeatureProtocol",
    "Method",
    "Metric",
    "NoOptions",
    "Outcome",
    "Pool",
    "Protocol",
    "Scores",
    "SegmentationData",
    "SegmentationSplit",
    "Selection",
    "Stage",
    "Task",
    "augment",
    "data",
    "hookimpl",
    "nets",
    "regions",
    "require_fractions",
    "require_positive",
    "require_whole_numbers",
    "supervised",
]

#: Where each building block that API 1.x exported flat lives now.
_MOVED = {
    name: module.__name__.rsplit(".", 1)[1] for module in (data, nets, regions, supervised) for name in module.__all__
} | {"normalize": "augment"}


def __getattr__(name: str) -> object:
    if name not in _MOVED:
        raise AttributeError(f"module 'ssl_bench.api' has no attribute {name!r}")
    raise AttributeError(
        f"ssl_bench.api.{name} moved to ssl_bench.api.{_MOVED[name]}.{name} in API 2.0: "
        f"from ssl_bench.api.{_MOVED[name]} import {name}"
    )
