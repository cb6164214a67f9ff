"""Statistics for leaderboards: seed-level tests, multiple-comparison correction, bootstrap intervals and rankings.

The unit of evidence for a claim that one method beats another is the training run (a seed: its own pretraining
and downstream training), never the test image: images of one test set are scored by the same trained model, so
they measure that model, not the method. Image-level intervals describe one set of trained models and are labelled
so. All functions take plain numpy arrays of scores where higher is better (Dice, IoU, accuracy).
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
MIN_SEEDS = 3
"""Training seeds a variant needs before ssl-bench claims it beats (or trails) another: below it, no claim.

With 2 seeds a side Welch's test has 1-2 degrees of freedom (a 95% interval of +-12.7 standard errors at worst) and
its false-positive rate is least robust to skewed seed distributions (Colas et al. 2019); 3 is the least that the
calibration tests in ``tests/unit/test_calibration.py`` hold at the nominal rate."""
MIN_COLUMNS = 5
"""Columns (tasks) a ranking needs before its Friedman test, critical difference and pairwise chances say anything."""
_SCORE_GRID = 100_001  # values of p a score interval is looked for among: endpoints to within 1e-5
_MAX_DRAWS = 1 << 20  # indices drawn per bootstrap chunk, bounds memory for large test sets


@dataclass(frozen=True)
class SeedComparison:
    """Variant A against reference B over training runs: ``mean(a) - mean(b)``, its 95% interval and p-value.

    ``test`` is ``"paired"`` (both sides vary their encoder with the seed, and each seed of one side drew the same
    random numbers as one of the other's), ``"welch"`` (both vary, unpaired) or ``"prediction"`` (one side holds a
    single encoder, e.g. a checkpoint, so it is one draw of an encoder and the other side's spread is the null).
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str


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
    """False below :data:`MIN_COLUMNS` tasks: too few blocks for the chi-square approximation to say anything."""


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


def seed_comparison(
    a: ArrayLike,
    b: ArrayLike,
    *,
    paired: bool = False,
    a_single_encoder: bool = False,
    b_single_encoder: bool = False,
) -> SeedComparison | None:
    """A against B with the training seed as the unit of evidence; None where the seeds cannot support a claim.

    ``a`` and ``b`` hold one score per seed (each seed its own pretraining and downstream run, scored on the same
    test images). Both sides varying: Welch's unequal-variance t-test and its interval (Welch 1947; the test
    Colas et al. 2018 recommend for comparing training runs). ``paired``: ``a[i]`` and ``b[i]`` drew the same
    random numbers downstream (common random numbers: decoder init, batch order, augmentation), so the paired
    t-test on ``a - b`` over ``n - 1`` degrees of freedom, whose differences no longer carry what the two runs of a
    pair share. One side a single encoder (every seed loaded the same weights, so its seeds only redraw the head):
    that side is one draw of an encoder, and the test asks whether it lies outside the other side's seed
    distribution: ``t = d / (s_b sqrt(1 + 1/n_b))`` on ``n_b - 1`` degrees of freedom (the prediction interval of one
    new run); pairing does not apply. A varying side needs :data:`MIN_SEEDS` seeds; two single encoders have no
    replicate at all. No spread at all: p = 1 for equal means, NaN (untestable) otherwise.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a_single_encoder and b_single_encoder:
        return None
    if (not a_single_encoder and len(a) < MIN_SEEDS) or (not b_single_encoder and len(b) < MIN_SEEDS):
        return None
    difference = float(a.mean() - b.mean())
    if a_single_encoder or b_single_encoder:
        sample = a if b_single_encoder else b
        se, df = float(sample.std(ddof=1)) * math.sqrt(1 + 1 / len(sample)), len(sample) - 1
        test = "prediction"
    elif paired:
        if len(a) != len(b):
            raise ValueError(f"paired seeds need as many scores a side, got {len(a)} and {len(b)}")
        se, df, test = float((a - b).std(ddof=1)) / math.sqrt(len(a)), len(a) - 1, "paired"
    else:
        var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        se = math.sqrt(var_a + var_b)
        df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1)) if se > 0 else math.nan
        test = "welch"
    if se == 0:
        p_value = 1.0 if difference == 0 else math.nan
        return SeedComparison(difference, difference, difference, p_value, test)
    half_width = float(sps.t.ppf(0.975, df)) * se
    p_value = float(2 * sps.t.sf(abs(difference) / se, df))
    return SeedComparison(difference, difference - half_width, difference + half_width, p_value, test)


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


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg q-values in input order (scipy's ``false_discovery_control``): claiming every p-value whose
    q is below 0.05 keeps the expected share of false claims among the claims at 5% or less."""
    return sps.false_discovery_control(np.asarray(p_values, dtype=float)).tolist()


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
    return FriedmanResult(tuple(mean_ranks.tolist()), statistic, p_value, critical_difference, k, n, n >= MIN_COLUMNS)


def iqm_normalised(scores: ArrayLike, scratch: ArrayLike) -> float:
    """Interquartile mean over tasks of scratch-normalised scores ``(score - scratch) / (1 - scratch)``.

    ``scores`` and ``scratch`` hold one value per task, in the same order; 0 means no better than training from
    scratch, 1 a perfect score. The IQM is rliable's: ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle 50%.
    """
    scores, scratch = _vector(scores, "scores"), _vector(scratch, "scratch")
    _check_reference(scratch, len(scores))
    return float(sps.trim_mean((scores - scratch) / (1 - scratch), 0.25))


def iqm_interval(
    seeds_by_task: Sequence[ArrayLike],
    scratch_by_task: Sequence[ArrayLike],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`iqm_normalised` over training seeds, stratified by task.

    ``seeds_by_task[t]`` holds the variant's per-seed scores on task ``t``, ``scratch_by_task[t]`` scratch's. As
    rliable's stratified bootstrap (Agarwal et al. 2021), each resample redraws the seeds of both within every task;
    the statistic is the IQM over tasks of the normalised seed means, its redraws spread about the point estimate
    by ``sqrt(n / (n - 1))`` (n: the fewest seeds of any task and side) to undo a redraw's lost variance. Each
    side's seeds are redrawn apart even where both ran on common random numbers, where the interval is then wider
    than it need be. NaN where a task has fewer than 2 seeds on either side: one run has no spread to redraw.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if len(seeds_by_task) != len(scratch_by_task) or not seeds_by_task:
        raise ValueError("seeds_by_task and scratch_by_task need one entry per task each, at least one task")
    variant = [_vector(scores, f"seeds of task {t}") for t, scores in enumerate(seeds_by_task)]
    scratch = [_vector(scores, f"scratch seeds of task {t}") for t, scores in enumerate(scratch_by_task)]
    if min(len(scores) for scores in variant + scratch) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = np.stack([_resampled(scores, np.mean, resamples, rng) for scores in variant])  # (tasks, resamples)
    reference = np.stack([_resampled(scores, np.mean, resamples, rng) for scores in scratch])
    if np.any(reference >= 1):
        raise ValueError("scratch scores must be below 1 to normalise against")
    normalised = sps.trim_mean((means - reference) / (1 - reference), 0.25, axis=0)
    point = iqm_normalised([scores.mean() for scores in variant], [scores.mean() for scores in scratch])
    # Unwidened, the 95% interval covers 0.89 of the time at 3 seeds, widened 0.95 (tests/unit/test_calibration.py).
    fewest = min(len(scores) for scores in variant + scratch)
    widened = point + math.sqrt(fewest / (fewest - 1)) * (normalised - point)
    return _percentile_interval(widened, level)


def _check_reference(scratch: NDArray[np.float64], n_tasks: int) -> None:
    if len(scratch) != n_tasks:
        raise ValueError(f"scores and scratch need one entry per task each, got {n_tasks} and {len(scratch)}")
    if np.any(scratch >= 1):
        raise ValueError("scratch scores must be below 1 to normalise against")


def probability_of_improvement(a_by_task: Sequence[ArrayLike], b_by_task: Sequence[ArrayLike]) -> float:
    """P(A beats B on a random task), rliable's probability of improvement (Agarwal et al. 2021).

    Per task, the Mann-Whitney probability that a seed of A scores above a seed of B (ties count half) over every
    pair of their seeds; then the mean over tasks. With one seed each a task contributes 1, 0.5 or 0.
    """
    a, b = _per_task(a_by_task, "a"), _per_task(b_by_task, "b")
    if len(a) != len(b):
        raise ValueError(f"a and b need one entry per task each, got {len(a)} and {len(b)}")
    return float(np.mean([_beats(x[None, :], y[None, :])[0] for x, y in zip(a, b, strict=True)]))


def probability_of_improvement_interval(
    a_by_task: Sequence[ArrayLike], b_by_task: Sequence[ArrayLike], level: float = 0.95
) -> tuple[float, float]:
    """Score interval of :func:`probability_of_improvement`: Newcombe's (2006) method 5, over tasks.

    For a task with m and n seeds, the variance of the Mann-Whitney estimate at a true value p is Hanley & McNeil's
    (1982) ``p(1-p)/(mn) * (1 + (k-1)((1-p)/(2-p) + p/(1+p)))`` with ``k = (m+n)/2 - 1``; the mean over T tasks has
    the tasks' variances summed and divided by T^2. The interval is every p with ``|estimate - p| <= z sqrt(V(p))``
    after a continuity correction of half the estimate's step. Unlike a bootstrap, it does not shrink to a point when
    every seed of A happens to beat every seed of B (with 3 seeds a side, 1 time in 20 under no difference at all).
    Coverage (``tests/unit/test_calibration.py``): 0.90 at 3 seeds a side and no difference (one side's seeds all beat
    the other's 10% of the time there, and such a sample excludes 0.5), 0.93-0.97 elsewhere. NaN where a task has
    fewer than 2 seeds on either side.
    """
    a, b = _per_task(a_by_task, "a"), _per_task(b_by_task, "b")
    if len(a) != len(b):
        raise ValueError(f"a and b need one entry per task each, got {len(a)} and {len(b)}")
    if min(len(scores) for scores in a + b) < 2:
        return math.nan, math.nan
    estimate = probability_of_improvement(a, b)
    p = np.linspace(0.0, 1.0, _SCORE_GRID)
    pairs = [(len(x), len(y)) for x, y in zip(a, b, strict=True)]
    variance = sum(_mann_whitney_variance(p, m, n) for m, n in pairs) / len(pairs) ** 2
    # Continuity correction: the estimate moves in steps of 1/(mn) per task, 1/(T mn) in the mean over T tasks.
    half_step = float(np.mean([1 / (2 * m * n) for m, n in pairs])) / len(pairs)
    distance = np.maximum(np.abs(estimate - p) - half_step, 0)
    inside = p[distance**2 <= sps.norm.ppf((1 + level) / 2) ** 2 * variance]
    return float(inside.min()), float(inside.max())


def _mann_whitney_variance(p: NDArray[np.float64], m: int, n: int) -> NDArray[np.float64]:
    """Hanley & McNeil's variance of the Mann-Whitney estimate of P(X > Y) at true values ``p``, m and n draws."""
    k = (m + n) / 2 - 1
    return p * (1 - p) / (m * n) * (1 + (k - 1) * ((1 - p) / (2 - p) + p / (1 + p)))


def _per_task(scores_by_task: Sequence[ArrayLike], name: str) -> list[NDArray[np.float64]]:
    if not scores_by_task:
        raise ValueError(f"{name} needs at least one task")
    return [_vector(scores, f"{name}'s seeds of task {t}") for t, scores in enumerate(scores_by_task)]


def _beats(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise P(X > Y) + P(X = Y) / 2 over all pairs of ``x[r]`` and ``y[r]``, shape ``(rows,)``."""
    # Means of the same scores summed in another order can differ in the last bits: such values count as ties.
    x, y = np.round(x, 12)[:, :, None], np.round(y, 12)[:, None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(1, 2))
