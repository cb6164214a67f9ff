"""LD's region clustering (Chen et al., IPMI 2021 / TPAMI 2023), shared by the ``ld`` method and the
``shape-guided`` protocol: soft cluster assignments, region features, region discrimination and entropy.

The maths and epsilons are the released code's; the autograd functions save only what backward needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# The released code's epsilons: L2 norm, L1 normalisation, entropy logarithms.
NORM_EPS = 1e-10
ASSIGNMENT_EPS = 1e-9
LOG_EPS = 1e-30
# The entropy's fp32 pass over the assignment maps takes this many channels at a time.
ENTROPY_CHANNELS_PER_PASS = 4


def l2_normalize(x: Tensor, dim: int = 1) -> Tensor:
    """x / (||x|| + 1e-10) along ``dim``, as the released code (not F.normalize's clamp)."""
    return x / (torch.linalg.vector_norm(x, dim=dim, keepdim=True) + NORM_EPS)


def at_least_fp32(x: Tensor) -> Tensor:
    """``x`` in fp32, or in its own dtype where that is wider (fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _ClusterAssignment(torch.autograd.Function):
    """Sigmoid, then L1 normalisation over channels: a = (s + 1e-9) / sum_k (s + 1e-9), s = sigmoid(x).

    Saves only a and the per-pixel sums, from which backward recovers s: autograd through the composite
    would keep s and s + 1e-9 as well, two more maps of the same size.
    """

    @staticmethod
    def forward(ctx, logits: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            shifted = torch.sigmoid(logits) + ASSIGNMENT_EPS
            total = shifted.sum(dim=1, keepdim=True)
            assignments = shifted / total
        ctx.save_for_backward(assignments, total)
        return assignments

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        assignments, total = ctx.saved_tensors
        grad_shifted = (grad - (grad * assignments).sum(dim=1, keepdim=True)) / total
        scores = (assignments * total - ASSIGNMENT_EPS).clamp(0.0, 1.0)
        return grad_shifted * scores * (1.0 - scores)


def cluster_assignment(logits: Tensor) -> Tensor:
    """LD's soft cluster assignments of ``logits (N, K, H, W)``: sigmoid, then L1-normalised over the K channels."""
    return _ClusterAssignment.apply(logits)


def region_features(embeddings: Tensor, assignments: Tensor) -> Tensor:
    """r[n, k] = L2norm(mean over pixels of a[n, k] z[n]), in fp32: (N, K, D).

    One batched matrix product over the pixels; never the (N, K, D, H, W) product.
    """
    pixels = embeddings.shape[-2] * embeddings.shape[-1]
    sums = torch.einsum("nkhw,ndhw->nkd", assignments, embeddings)
    return l2_normalize(at_least_fp32(sums) / pixels, dim=2)


def local_discrimination_loss(regions: Tensor, temperature: float) -> Tensor:
    """L_ld: each region feature (N, K, D) classified among the batch's cluster centres (not detached)."""
    images, clusters = regions.shape[:2]
    centres = l2_normalize(regions.mean(dim=0), dim=1)
    logits = regions @ centres.T / temperature
    targets = torch.arange(clusters, device=regions.device).repeat(images)
    return F.cross_entropy(logits.reshape(-1, clusters), targets)


def _binary_entropy(a: Tensor) -> Tensor:
    return -a * torch.log2(a + LOG_EPS) - (1 - a) * torch.log2(1 - a + LOG_EPS)


def _binary_entropy_slope(a: Tensor) -> Tensor:
    """d/da of :func:`_binary_entropy`, exactly (epsilons included)."""
    inside, outside = a + LOG_EPS, 1 - a + LOG_EPS
    return torch.log2(outside / inside) + ((1 - a) / outside - a / inside) / math.log(2)


class _MeanBinaryEntropy(torch.autograd.Function):
    """Mean binary entropy of a map, in fp32, saving only the map for backward (which the region features
    keep anyway): autograd through the formula would keep six more tensors of the map's size. It works
    through a few channels at a time, so that its fp32 temporaries stay a fraction of a bf16 map."""

    @staticmethod
    def forward(ctx, assignments: Tensor) -> Tensor:
        ctx.save_for_backward(assignments)
        sums = [_binary_entropy(at_least_fp32(part)).sum() for part in _channel_slices(assignments)]
        return torch.stack(sums).sum() / assignments.numel()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (assignments,) = ctx.saved_tensors
        scale = grad / assignments.numel()
        parts = _channel_slices(assignments)
        return torch.cat([(_binary_entropy_slope(at_least_fp32(part)) * scale).to(part.dtype) for part in parts], 1)


def _channel_slices(maps: Tensor) -> tuple[Tensor, ...]:
    return maps.split(ENTROPY_CHANNELS_PER_PASS, dim=1)


def entropy_loss(assignments: Tensor) -> Tensor:
    """L_ent: the mean over all elements of -a log2 a - (1 - a) log2 (1 - a), in fp32."""
    return _MeanBinaryEntropy.apply(assignments)
