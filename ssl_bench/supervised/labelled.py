"""Which training images are labelled: the one rule behind label fractions and image caps, for every task kind.

A file's order is not a random order (PneumoniaMNIST's training split is sorted by label: any prefix of it holds
one class), so the labelled subset is drawn by a seeded permutation, stratified by class where images have one:
every prefix of the draw holds each class in proportion, led by one image of each. A task that reproduces a
released ordered list (:attr:`~ssl_bench.task.Task.ordered_split`, LD's splits) keeps its order instead: the
subset is the list's prefix, as its authors took it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssl_bench.errors import ConfigError


def labelled_count(n: int, label_fraction: float) -> int:
    """How many of ``n`` training images ``label_fraction`` labels: ``floor(f n)``, at least 2."""
    if not 0 < label_fraction <= 1:
        raise ConfigError(f"label_fraction must be in (0, 1], got {label_fraction}")
    count = math.floor(label_fraction * n + 1e-9)  # the epsilon keeps 0.29 * 100 = 28.999... from losing a row
    if count < 2:
        raise ConfigError(
            f"label fraction {label_fraction} of {n} training images keeps {count}; at least 2 are needed: "
            "use a larger fraction or more training images"
        )
    return count


def labelled_rows(
    n: int, label_fraction: float, *, seed: int | None, classes: Tensor | None = None, limit: int | None = None
) -> Tensor:
    """The training rows that ``label_fraction`` of ``n`` images labels (at most ``limit``), in the order drawn.

    ``seed`` None keeps the list's order (a task reproducing a released ordered list): the first rows. Otherwise
    the rows are a permutation drawn from ``seed``, stratified by ``classes`` (one class index per row) if given.
    The same seed draws the same rows, and a smaller fraction a prefix of them.
    """
    count = labelled_count(n, label_fraction)
    if limit is not None:
        count = min(count, limit)
    if seed is None:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    if classes is None:
        return torch.randperm(n, generator=generator)[:count]
    return _stratified_order(classes, generator)[:count]


def _stratified_order(classes: Tensor, generator: torch.Generator) -> Tensor:
    """A random order of rows in which every prefix holds each class in proportion (within one image), led by one
    image of each class.

    The rows are shuffled; the j-th row of a class of m rows (in shuffled order) gets the key j / m, and the rows
    are sorted by key, ties in shuffled order. Key 0 puts one row of each class first; a prefix that ends below
    key t holds ceil(t m) rows of each class.
    """
    shuffled = torch.randperm(len(classes), generator=generator)
    _, class_of, counts = torch.unique(classes[shuffled], return_inverse=True, return_counts=True)
    grouped = torch.sort(class_of, stable=True).indices  # each class's rows together, in shuffled order
    first_of_class = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(class_of)
    rank[grouped] = torch.arange(len(classes)) - first_of_class[class_of[grouped]]
    keys = rank.double() / counts[class_of].double()
    return shuffled[torch.sort(keys, stable=True).indices]
