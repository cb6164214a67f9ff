"""LD's region maths, shared by the ``ld`` method and the ``shape-guided`` protocol: soft cluster assignment,
region features, the local discrimination and entropy losses."""

from ssl_bench.regions import (
    NORM_EPS,
    at_least_fp32,
    cluster_assignment,
    entropy_loss,
    l2_normalize,
    local_discrimination_loss,
    region_features,
)

__all__ = [
    "NORM_EPS",
    "at_least_fp32",
    "cluster_assignment",
    "entropy_loss",
    "l2_normalize",
    "local_discrimination_loss",
    "region_features",
]
