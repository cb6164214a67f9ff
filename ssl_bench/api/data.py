"""Data helpers for task plugins: image and mask reading (any bit depth and encoding), LD's fundus preprocessing,
the cache of prepared arrays, and the synthetic phantoms."""

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

__all__ = [
    "FUNDUS_LANDMARKS",
    "IMAGE_SUFFIXES",
    "PhantomSet",
    "crop",
    "fundus_roi_box",
    "make_angiogram",
    "make_cxr",
    "make_fundus",
    "prepared_arrays",
    "read_image",
    "read_mask",
    "resize_image",
    "resize_mask",
]
