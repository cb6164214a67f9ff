"""Statistics for leaderboards: paired tests, multiple-comparison correction, bootstrap intervals and rankings.

All functions take plain numpy arrays of scores where higher is better (Dice, IoU, accuracy).
Bootstraps draw from a ``numpy.random.Generator`` seeded with :data:`BOOTSTRAP_SEED` unless told otherwise,
so a leaderboard rebuilt from the same records shows the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

BOOTSTRAP_RESAMPLES = 2000
"""Bootstrap resamples; the Monte Carlo error of a 95% percentile endpoint is then about 1.5% of the interval width."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap generator, fixed so that intervals are reproducible."""
ZERO_METHOD = "wilcox"
"""scipy's ``zero_method`` for the Wilcoxon test: images on which both methods score the same are dropped."""
_MAX_DRAWS = 1 << 20  # indices drawn per bootstrap chunk, bounds memory for large test sets
# Up to this many pairs the signed-rank test enumerates every sign flip (2^13 = 8192): exact with ties and zeros.
_MAX_ENUMERATED = 13


@dataclass(frozen=True)
class PairedTest:
    """Two methods compared on the same images: Wilcoxon p-value and the median of ``a - b`` with its 95% CI."""

    p_value: float
    median_difference: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman test over tasks, with mean ranks (1 = best) and the Nemenyi critical difference at alpha = 0.05."""

    mean_ranks: tuple[float, ...]
    statistic: float
    p_value: float
    critical_difference: float
    n_methods: int
    n_tasks: int
    informative: bool
    """False with fewer than 5 tasks: too few blocks for the chi-square approximation to say anything."""


def _vector(values: ArrayLike, name: str, min_len: int = 1) -> NDArray[np.float64]:
    """``values`` as a finite 1-D float array of at least ``min_len`` entries, else a ValueError naming it."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if len(array) < min_len:
        raise ValueError(f"{name} needs at least {min_len} values, got {len(array)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _resampled(
    values: NDArray[np.float64],
    statistic: Callable[..., NDArray[np.float64]],
    resamples: int,
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """``statistic(axis=1)`` of ``resamples`` draws of ``values`` with replacement, shape ``(resamples,)``."""
    n = len(values)
    rows = max(1, _MAX_DRAWS // n)
    chunks = []
    for start in range(0, resamples, rows):
        index = rng.integers(0, n, size=(min(rows, resamples - start), n))
        chunks.append(statistic(values[index], axis=1))
    return np.concatenate(chunks)


def _percentile_interval(samples: NDArray[np.float64], level: float) -> tuple[float, float]:
    """Percentile interval: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the bootstrap samples."""
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_test(a: ArrayLike, b: ArrayLike) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of per-image scores ``a`` and ``b`` on the same test images.

    Zero differences follow :data:`ZERO_METHOD` ("wilcox", scipy's and R's default): an image on which both methods
    score the same (typically both 1.0 on an empty label) says nothing about which is better, while "pratt" would let
    such images shift the ranks of the others. If every difference is zero, p = 1.0. Up to 13 pairs the null
    distribution is every sign flip of the ranks (exact, also with ties and zeros: scipy's own answer there, much
    faster); beyond, scipy's default: exact up to 50 pairs without ties or zeros, else the normal approximation.
    The interval is a percentile bootstrap over images of the median of ``a - b`` (:data:`BOOTSTRAP_RESAMPLES` draws,
    :data:`BOOTSTRAP_SEED`).
    """
    a, b = _vector(a, "a", min_len=2), _vector(b, "b", min_len=2)
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    differences = a - b
    # With every difference zero there is nothing left to rank.
    if np.all(differences == 0):
        p_value = 1.0
    elif len(differences) <= _MAX_ENUMERATED:
        p_value = _enumerated_signed_rank_p(differences)
    else:
        p_value = float(sps.wilcoxon(a, b, zero_method=ZERO_METHOD).pvalue)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    medians = _resampled(differences, np.median, BOOTSTRAP_RESAMPLES, rng)
    ci_low, ci_high = _percentile_interval(medians, 0.95)
    return PairedTest(p_value, float(np.median(differences)), ci_low, ci_high, len(a))


def _enumerated_signed_rank_p(differences: NDArray[np.float64]) -> float:
    """Two-sided p of the signed-rank statistic (zero differences dropped) under all ``2^n`` sign flips at once.

    The value scipy gives for up to 13 pairs with ties or zeros (a permutation test that then sees every flip),
    but a matrix product instead of scipy's loop over flips, which took seconds a test at 13 pairs.
    """
    nonzero = differences[differences != 0]
    ranks = sps.rankdata(np.abs(nonzero))
    observed = ranks[nonzero > 0].sum()
    flips = (np.arange(1 << len(nonzero))[:, None] >> np.arange(len(nonzero))) & 1
    null = flips @ ranks
    tolerance = 1e-9 * max(1.0, observed)  # sums of half ranks: equal values may differ in the last bits
    tails = min(np.mean(null <= observed + tolerance), np.mean(null >= observed - tolerance))
    return float(min(1.0, 2 * tails))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values in input order (Holm 1979).

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    ``min(1, max_{j <= i} (m - j + 1) p_(j))``. NaN inputs stay NaN and do not count in m.
    """
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    if np.any((p[valid] < 0) | (p[valid] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    scaled = (m - np.arange(m)) * p[order]
    adjusted = np.full_like(p, np.nan)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted.tolist()


def bootstrap_interval(
    scores_by_seed: Sequence[ArrayLike],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a cell's mean score, stratified by seed.

    Each resample draws, within every seed, as many test images as that seed scored, with replacement; the statistic
    is the mean over seeds of the per-seed means. One seed gives the plain image bootstrap.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not scores_by_seed:
        raise ValueError("scores_by_seed needs at least one seed")
    rng = np.random.default_rng(seed)
    per_seed = [
        _resampled(_vector(scores, f"scores of seed {i}"), np.mean, resamples, rng)
        for i, scores in enumerate(scores_by_seed)
    ]
    return _percentile_interval(np.mean(per_seed, axis=0), level)


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Nemenyi's q_alpha for k methods: studentized range quantile q(1 - alpha; k, inf) / sqrt(2) (Demsar 2006)."""
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def friedman(scores: ArrayLike) -> FriedmanResult:
    """Friedman test on a (methods x tasks) score matrix, higher is better (Demsar 2006, section 3.2.2).

    Within each task methods get ranks 1 (best) to k, ties averaged; R_j is the mean rank of method j over N tasks.
    The statistic is ``12N / (k(k+1)) * sum_j (R_j - (k+1)/2)^2`` divided by the tie correction
    ``1 - sum(t^3 - t) / (N(k^3 - k))`` over groups of t tied methods (as scipy.stats.friedmanchisquare), with a
    chi-square(k - 1) p-value. The Nemenyi critical difference is ``CD = q_0.05 * sqrt(k(k+1) / (6N))``.
    """
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(f"scores must be a (methods x tasks) matrix with at least 2 methods, got {matrix.shape}")
    if np.any(np.isnan(matrix)):
        raise ValueError("scores contain NaN; the Friedman test needs every method scored on every task")
    k, n = matrix.shape
    ranks = sps.rankdata(-matrix, axis=0)
    mean_ranks = ranks.mean(axis=1)
    ties = sum(float(np.sum(t**3 - t)) for t in (np.unique(column, return_counts=True)[1] for column in matrix.T))
    correction = 1 - ties / (n * (k**3 - k))
    if correction == 0:
        statistic, p_value = 0.0, 1.0  # every task ties all methods: nothing to tell them apart
    else:
        statistic = 12 * n / (k * (k + 1)) * float(np.sum((mean_ranks - (k + 1) / 2) ** 2)) / correction
        p_value = float(sps.chi2.sf(statistic, k - 1))
    critical_difference = nemenyi_q(k) * math.sqrt(k * (k + 1) / (6 * n))
    return FriedmanResult(tuple(mean_ranks.tolist()), statistic, p_value, critical_difference, k, n, n >= 5)


def iqm_normalised(scores: ArrayLike, scratch: ArrayLike) -> float:
    """Interquartile mean over tasks of scratch-normalised scores ``(score - scratch) / (1 - scratch)``.

    ``scores`` and ``scratch`` hold one value per task, in the same order; 0 means no better than training from
    scratch, 1 a perfect score. The IQM is rliable's: ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle 50%.
    """
    scores, scratch = _vector(scores, "scores"), _vector(scratch, "scratch")
    _check_reference(scratch, len(scores))
    return float(sps.trim_mean((scores - scratch) / (1 - scratch), 0.25))


def iqm_interval(
    scores_by_task: Sequence[Sequence[ArrayLike]],
    scratch: ArrayLike,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`iqm_normalised`, stratified by task and seed.

    ``scores_by_task[t][s]`` holds the per-image scores of seed ``s`` on task ``t``; ``scratch[t]`` is the fixed
    reference of task ``t``. Each resample redraws the images within every seed of every task (as
    :func:`bootstrap_interval` does for one cell), so that one seed per task still has an honest interval; the
    statistic is the IQM over tasks of the normalised mean over seeds.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    scratch = _vector(scratch, "scratch")
    _check_reference(scratch, len(scores_by_task))
    if not all(scores_by_task):
        raise ValueError("every task needs the scores of at least one seed")
    rng = np.random.default_rng(seed)
    task_means = np.stack(
        [
            np.mean([_resampled(_vector(scores, f"scores of task {t}"), np.mean, resamples, rng) for scores in task], 0)
            for t, task in enumerate(scores_by_task)
        ]
    )  # (tasks, resamples)
    normalised = (task_means - scratch[:, None]) / (1 - scratch[:, None])
    return _percentile_interval(sps.trim_mean(normalised, 0.25, axis=0), level)


def _check_reference(scratch: NDArray[np.float64], n_tasks: int) -> None:
    if len(scratch) != n_tasks:
        raise ValueError(f"scores and scratch need one entry per task each, got {n_tasks} and {len(scratch)}")
    if np.any(scratch >= 1):
        raise ValueError("scratch scores must be below 1 to normalise against")


def probability_of_improvement(a: ArrayLike, b: ArrayLike) -> float:
    """P(A beats B on a random task): the mean over tasks of 1 if a > b, 0.5 if a == b, 0 otherwise.

    This is the task-level version of rliable's probability of improvement (Agarwal et al. 2021), which averages a
    per-task Mann-Whitney P(X > Y) over runs; here each task contributes one comparison of its aggregated scores.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a and b need one score per task each, got {len(a)} and {len(b)}")
    return float(np.mean((a > b) + 0.5 * (a == b)))
