"""The labelled subset of a training list: a seeded, class-stratified draw, or the prefix of a released order."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.errors import ConfigError
from ssl_bench.supervised.labelled import labelled_count, labelled_rows

# A training list sorted by label, as PneumoniaMNIST's: 12 images of class 1, then 4 of class 0.
SORTED = torch.tensor([1] * 12 + [0] * 4)


def class_counts(rows: torch.Tensor, classes: torch.Tensor = SORTED) -> tuple[int, int]:
    """(class 0, class 1) images among ``rows``."""
    labels = classes[rows]
    return int((labels == 0).sum()), int((labels == 1).sum())


@pytest.mark.parametrize("seed", range(5))
def test_a_sorted_list_is_drawn_in_proportion_led_by_one_image_of_each_class(seed: int):
    # Class 1 rows get keys 0, 1/12, 2/12, ..., class 0 rows 0, 1/4, 2/4, 3/4. Sorted: 0 0 | 1/12 | 2/12 | 3/12 3/12 |
    # 4/12 | 5/12 | ... The first 2 rows are one of each class, the first 4 hold one of class 0 and the first 8
    # two: a quarter, as in the list.
    def counts(fraction: float, limit: int | None = None) -> tuple[int, int]:
        return class_counts(labelled_rows(16, fraction, seed=seed, classes=SORTED, limit=limit))

    assert counts(0.125) == (1, 1)
    assert counts(1.0, limit=4) == (1, 3)
    assert counts(0.5) == (2, 6)
    assert counts(1.0) == (4, 12)


def test_the_draw_depends_on_the_seed_alone_and_a_smaller_fraction_is_a_prefix_of_it():
    rows = labelled_rows(16, 0.5, seed=7, classes=SORTED)
    assert torch.equal(rows, labelled_rows(16, 0.5, seed=7, classes=SORTED))
    assert not torch.equal(rows, labelled_rows(16, 0.5, seed=8, classes=SORTED))
    assert torch.equal(labelled_rows(16, 0.25, seed=7, classes=SORTED), rows[:4])
    everything = labelled_rows(16, 1.0, seed=7, classes=SORTED)
    assert sorted(everything.tolist()) == list(range(16))  # each row once


def test_a_rare_class_is_among_the_first_rows():
    # 30 images of class 0, 30 of class 1, one of class 2 last: a proportional share of 3 images gives class 2 none,
    # but each class leads with one image.
    classes = torch.tensor([0] * 30 + [1] * 30 + [2])
    for seed in range(5):
        rows = labelled_rows(61, 1.0, seed=seed, classes=classes, limit=3)
        assert sorted(classes[rows].tolist()) == [0, 1, 2]


def test_without_classes_the_draw_is_a_seeded_permutation():
    rows = labelled_rows(10, 0.6, seed=3)
    assert len(rows) == 6 and len(set(rows.tolist())) == 6 and all(0 <= row < 10 for row in rows.tolist())
    assert torch.equal(rows, labelled_rows(10, 0.6, seed=3))
    assert not torch.equal(rows, labelled_rows(10, 0.6, seed=4))
    assert not torch.equal(labelled_rows(10, 1.0, seed=3), torch.arange(10))


def test_without_a_seed_the_released_order_is_kept():
    assert labelled_rows(16, 0.5, seed=None, classes=SORTED).tolist() == list(range(8))
    assert labelled_rows(100, 0.29, seed=None).tolist() == list(range(29))  # 0.29 * 100 is 28.999... in floats
    assert labelled_rows(16, 1.0, seed=None, limit=5).tolist() == list(range(5))


@pytest.mark.parametrize(("n", "fraction", "count"), [(20, 1.0, 20), (10, 0.2, 2), (37, 0.8, 29), (100, 0.29, 29)])
def test_labelled_count_is_floor_f_n(n: int, fraction: float, count: int):
    assert labelled_count(n, fraction) == count


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.1), (1, 1.0), (0, 1.0), (19, 0.1)])
def test_fewer_than_two_labelled_images_are_refused(n: int, fraction: float):
    with pytest.raises(ConfigError, match="at least 2 are needed: use a larger fraction"):
        labelled_count(n, fraction)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_fractions_outside_0_1_are_refused(fraction: float):
    with pytest.raises(ConfigError, match=r"label_fraction must be in \(0, 1\]"):
        labelled_count(10, fraction)
