"""Losses that several methods share and lightly lacks: Ye et al.'s batch criterion (CVPR 2019).

LD applies it to patch features (see ld-spec.md, "Batch criterion"), instance spreading to whole-image
embeddings.
"""

import torch
from torch import Tensor

# The released LD code's epsilon in the criterion's denominator.
DENOMINATOR_EPS = 1e-10


def batch_criterion(rows: Tensor, temperature: float) -> Tensor:
    """Ye et al.'s batch criterion on L2-normalised rows (N, D); row i's positive is row (i + N/2) mod N.

    Similarities take the gradient through the row side only (the key side is detached).
    """
    count = rows.shape[0]
    similarity = (rows @ rows.detach().T / temperature).exp()
    similarity = similarity.masked_fill(torch.eye(count, dtype=torch.bool, device=rows.device), 0.0)
    probability = similarity / (similarity.sum(dim=1, keepdim=True) + DENOMINATOR_EPS)
    positives = torch.arange(count, device=rows.device).add(count // 2).remainder(count)
    positive = probability.gather(1, positives.unsqueeze(1)).squeeze(1)
    # The diagonal is 0 and contributes log(1) = 0; the positive is taken back out of the negatives.
    negatives = torch.log1p(-probability).sum(dim=1) - torch.log1p(-positive)
    return -(positive.log() + negatives).mean()
