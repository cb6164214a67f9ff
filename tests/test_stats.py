import math

import numpy as np
import pytest
from scipy import stats as sps

from ssl_bench.stats import (
    bootstrap_interval,
    friedman,
    holm,
    iqm_interval,
    iqm_normalised,
    nemenyi_q,
    paired_test,
    probability_of_improvement,
)

# --- paired_test ---


def test_paired_test_on_a_hand_example() -> None:
    a = np.array([0.9, 0.8, 0.7, 0.6])
    b = np.array([0.8, 0.8, 0.5, 0.7])
    result = paired_test(a, b)
    # Differences [0.1, 0, 0.2, -0.1]: sorted [-0.1, 0, 0.1, 0.2], median (0 + 0.1) / 2.
    assert result.median_difference == pytest.approx(0.05)
    assert result.n == 4
    assert result.p_value == pytest.approx(sps.wilcoxon(a, b, zero_method="wilcox").pvalue)
    assert result.ci_low <= result.median_difference <= result.ci_high


def test_zero_differences_are_dropped_before_ranking() -> None:
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 0.9, 20)
    a = b + rng.normal(0.02, 0.05, 20)
    a[:6] = b[:6]  # six images on which both methods agree exactly
    differences = a - b
    # The same p-value as the 14 non-zero differences alone; with zeros present scipy uses the normal approximation.
    assert paired_test(a, b).p_value == pytest.approx(sps.wilcoxon(differences[6:], method="approx").pvalue)


def test_a_better_on_every_image_is_significant() -> None:
    rng = np.random.default_rng(2)
    b = rng.uniform(0.4, 0.8, 30)
    differences = rng.uniform(0.01, 0.1, 30)  # distinct, all positive
    result = paired_test(b + differences, b)
    # Exact null distribution: all 30 signs positive has probability 2^-30, doubled for two sides.
    assert result.p_value == pytest.approx(2 / 2**30)
    assert result.p_value < 1e-3
    assert result.median_difference == pytest.approx(np.median(differences))
    assert 0 < result.ci_low <= result.median_difference <= result.ci_high


def test_few_pairs_with_ties_and_a_zero_get_the_exact_p_value() -> None:
    # Differences [0.5, 0.5, 1, 2, 0]: the zero dropped, ranks 1.5, 1.5, 3, 4, all positive (T+ = 10). Of the 16
    # sign flips only all-positive reaches 10, so p = 2 * 1/16.
    b = np.array([0.1, 0.2, 0.0, 0.0, 0.3])
    assert paired_test(b + np.array([0.5, 0.5, 1.0, 2.0, 0.0]), b).p_value == pytest.approx(0.125)


def test_few_pairs_with_ties_and_zeros_match_scipys_permutation_test() -> None:
    # 11 pairs with ties and zeros: scipy enumerates every sign flip too (slowly), so the values must agree.
    a = np.array([0.5, 0.6, 0.6, 0.7, 0.2, 0.9, 0.4, 0.4, 0.3, 0.8, 0.1])
    b = np.array([0.5, 0.4, 0.5, 0.6, 0.2, 0.7, 0.5, 0.3, 0.5, 0.6, 0.0])
    assert paired_test(a, b).p_value == pytest.approx(sps.wilcoxon(a, b, zero_method="wilcox").pvalue, rel=1e-12)


def test_wilcoxon_p_value_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 0.9, 60)
    b = a + rng.normal(-0.01, 0.05, 60)
    assert paired_test(a, b).p_value == pytest.approx(sps.wilcoxon(a, b).pvalue)


def test_identical_methods_give_p_one_and_zero_median() -> None:
    a = np.linspace(0.5, 0.9, 12)
    assert paired_test(a, a.copy()) == paired_test(a, a)
    result = paired_test(a, a)
    assert (result.p_value, result.median_difference, result.ci_low, result.ci_high) == (1.0, 0.0, 0.0, 0.0)


def test_paired_test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_test([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([0.1], [0.2])
    with pytest.raises(ValueError, match="NaN"):
        paired_test([0.1, np.nan], [0.2, 0.3])


# --- holm ---


def test_holm_on_a_hand_example() -> None:
    # m = 4, sorted: 0.01*4 = 0.04, 0.03*3 = 0.09, 0.04*2 = 0.08 -> running max 0.09, 0.5*1 = 0.5.
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_caps_at_one() -> None:
    # 0.4*2 = 0.8, then 0.6*1 = 0.6 lifted to the running max 0.8; 0.6*2 = 1.2 capped at 1.
    assert holm([0.6, 0.4]) == pytest.approx([0.8, 0.8])
    assert holm([0.7, 0.6]) == [1.0, 1.0]


def test_holm_keeps_nan_out_of_m() -> None:
    # m = 2: 0.01*2 = 0.02, 0.02*1 = 0.02.
    adjusted = holm([0.02, float("nan"), 0.01])
    assert math.isnan(adjusted[1])
    assert [adjusted[0], adjusted[2]] == pytest.approx([0.02, 0.02])
    assert holm([]) == []


def test_holm_rejects_values_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


# --- bootstrap_interval ---


def test_bootstrap_interval_contains_the_mean_and_matches_normal_theory() -> None:
    scores = np.random.default_rng(4).uniform(0.5, 0.9, 400)
    low, high = bootstrap_interval([scores])
    assert low < scores.mean() < high
    # Normal approximation of the mean's 95% interval: 2 * 1.96 * sd / sqrt(n).
    assert high - low == pytest.approx(2 * 1.96 * scores.std() / math.sqrt(400), rel=0.1)


def test_bootstrap_interval_narrows_with_more_images() -> None:
    rng = np.random.default_rng(5)
    few, many = rng.uniform(0.5, 0.9, 25), rng.uniform(0.5, 0.9, 400)
    few_low, few_high = bootstrap_interval([few])
    many_low, many_high = bootstrap_interval([many])
    # Width scales as 1 / sqrt(n): 16 times the images, about a quarter of the width.
    assert many_high - many_low < (few_high - few_low) / 2


def test_bootstrap_interval_is_deterministic_given_the_seed() -> None:
    scores = [np.random.default_rng(6).uniform(0.5, 0.9, 50)]
    assert bootstrap_interval(scores, seed=7) == bootstrap_interval(scores, seed=7)
    assert bootstrap_interval(scores, seed=7) != bootstrap_interval(scores, seed=8)


def test_bootstrap_interval_is_stratified_by_seed() -> None:
    first = np.random.default_rng(9).uniform(0.5, 0.9, 30)
    constant = np.full(12, 0.4)
    # A seed whose images all score 0.4 always resamples to mean 0.4, and the first seed draws the same indices
    # as on its own, so the cell's statistic is (mean of first + 0.4) / 2 in every resample.
    low, high = bootstrap_interval([first])
    both = bootstrap_interval([first, constant])
    assert both == pytest.approx(((low + 0.4) / 2, (high + 0.4) / 2))
    assert bootstrap_interval([constant]) == pytest.approx((0.4, 0.4))


def test_bootstrap_interval_level_widens_the_interval() -> None:
    scores = [np.random.default_rng(10).uniform(0.5, 0.9, 50)]
    low_90, high_90 = bootstrap_interval(scores, level=0.9)
    low_99, high_99 = bootstrap_interval(scores, level=0.99)
    assert low_99 < low_90 < high_90 < high_99


def test_bootstrap_interval_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([[0.5, 0.6]], level=1.0)
    with pytest.raises(ValueError, match="at least one seed"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="seed 1"):
        bootstrap_interval([[0.5, 0.6], []])


# --- friedman ---

# Rows are methods A, B, C; columns four tasks.
SCORES_3X4 = np.array(
    [
        [0.9, 0.8, 0.7, 0.6],
        [0.8, 0.8, 0.9, 0.5],
        [0.7, 0.6, 0.5, 0.4],
    ]
)


def test_friedman_mean_ranks_and_statistic_by_hand() -> None:
    result = friedman(SCORES_3X4)
    # Ranks per task: A 1, 1.5, 2, 1; B 2, 1.5, 1, 2; C 3, 3, 3, 3.
    assert result.mean_ranks == pytest.approx((5.5 / 4, 6.5 / 4, 3.0))
    # 12N / (k(k+1)) = 48 / 12 = 4; sum (R - 2)^2 = 0.390625 + 0.140625 + 1 = 1.53125 -> 6.125.
    # One tie of two in task 2: correction 1 - (2^3 - 2) / (4 * (27 - 3)) = 0.9375.
    assert result.statistic == pytest.approx(6.125 / 0.9375)
    # chi-square with 2 degrees of freedom: sf(x) = exp(-x / 2).
    assert result.p_value == pytest.approx(math.exp(-6.125 / 0.9375 / 2))
    assert (result.n_methods, result.n_tasks, result.informative) == (3, 4, False)


def test_friedman_matches_scipy() -> None:
    scores = np.round(np.random.default_rng(11).uniform(0.5, 0.9, (5, 12)), 1)  # rounded to create ties
    result = friedman(scores)
    expected = sps.friedmanchisquare(*scores)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert friedman(SCORES_3X4).statistic == pytest.approx(sps.friedmanchisquare(*SCORES_3X4).statistic)
    assert result.informative


def test_friedman_with_two_methods() -> None:
    # A wins all 5 tasks: mean ranks 1 and 2; 12*5 / (2*3) * (0.25 + 0.25) = 5, chi-square with 1 dof.
    result = friedman([[0.9, 0.8, 0.7, 0.6, 0.5], [0.8, 0.7, 0.6, 0.5, 0.4]])
    assert result.mean_ranks == (1.0, 2.0)
    assert result.statistic == pytest.approx(5.0)
    assert result.p_value == pytest.approx(sps.chi2.sf(5.0, 1))


def test_friedman_with_every_task_tied() -> None:
    result = friedman(np.full((3, 6), 0.7))
    assert result.mean_ranks == (2.0, 2.0, 2.0)
    assert (result.statistic, result.p_value) == (0.0, 1.0)


@pytest.mark.parametrize(("k", "q"), [(2, 1.960), (3, 2.343), (4, 2.569), (5, 2.728), (10, 3.164)])
def test_nemenyi_q_matches_demsar_table(k: int, q: float) -> None:
    # Within 0.001 rather than rounded: for k = 3 the exact 2.3437 is printed as 2.343 in Demsar's Table 5(a).
    assert nemenyi_q(k) == pytest.approx(q, abs=1e-3)


def test_friedman_critical_difference() -> None:
    # k = 3, N = 4: CD = 2.343 * sqrt(3 * 4 / (6 * 4)) = 2.343 * sqrt(0.5).
    assert friedman(SCORES_3X4).critical_difference == pytest.approx(2.343 * math.sqrt(0.5), abs=1e-3)


def test_friedman_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 methods"):
        friedman([[0.5, 0.6, 0.7]])
    with pytest.raises(ValueError, match="NaN"):
        friedman([[0.5, np.nan], [0.6, 0.7]])


# --- iqm_normalised and probability_of_improvement ---


def test_iqm_normalised_on_a_hand_example() -> None:
    scores = [0.75, 0.4, 0.9, 0.1, 1.0, 0.2, 0.0, 0.6]
    scratch = [0.5, 0.2, 0.6, 0.0, 0.5, 0.2, 0.6, 0.0]
    # Normalised: 0.5, 0.25, 0.75, 0.1, 1.0, 0.0, -1.5, 0.6.
    # Sorted: -1.5, 0.0 | 0.1, 0.25, 0.5, 0.6 | 0.75, 1.0 -> middle four sum to 1.45, IQM 0.3625 (the mean is 0.2125).
    assert iqm_normalised(scores, scratch) == pytest.approx(0.3625)


def test_iqm_normalised_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="below 1"):
        iqm_normalised([0.9, 1.0], [0.5, 1.0])
    with pytest.raises(ValueError, match="one entry per task"):
        iqm_normalised([0.9, 0.8], [0.5])


def test_iqm_interval_collapses_when_no_image_varies() -> None:
    # Each seed scores every image alike, so no resample can move a task's mean: the interval is the point IQM.
    # The two seeds of task 0 differ (0.8 and 0.6): pooling their images would move the mean, stratifying cannot.
    scores = [[[0.8] * 5, [0.6] * 7], [[0.4] * 6], [[0.9] * 4], [[0.2] * 3]]
    scratch = [0.5, 0.2, 0.6, 0.0]
    # Normalised means: (0.7-0.5)/0.5 = 0.4, 0.25, 0.75, 0.2 -> sorted 0.2 | 0.25, 0.4 | 0.75 -> IQM 0.325.
    low, high = iqm_interval(scores, scratch)
    assert low == pytest.approx(0.325) and high == pytest.approx(0.325)


def test_iqm_interval_holds_the_point_value_and_narrows_with_more_images() -> None:
    rng = np.random.default_rng(3)
    scratch = np.array([0.5, 0.4, 0.6, 0.3])

    def width(n_images: int) -> float:
        scores = [[np.clip(rng.normal(m + 0.1, 0.1, n_images), 0, 1)] for m in scratch]
        point = iqm_normalised([task[0].mean() for task in scores], scratch)
        low, high = iqm_interval(scores, scratch)
        assert low < point < high
        return high - low

    assert width(400) < 0.5 * width(25)


def test_iqm_interval_is_deterministic_given_the_seed() -> None:
    scores = [[np.linspace(0.5, 0.9, 10)], [np.linspace(0.2, 0.6, 10)]]
    assert iqm_interval(scores, [0.4, 0.3], seed=1) == iqm_interval(scores, [0.4, 0.3], seed=1)
    assert iqm_interval(scores, [0.4, 0.3], seed=1) != iqm_interval(scores, [0.4, 0.3], seed=2)


def test_iqm_interval_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one entry per task"):
        iqm_interval([[[0.5, 0.6]]], [0.2, 0.3])
    with pytest.raises(ValueError, match="at least one seed"):
        iqm_interval([[[0.5, 0.6]], []], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        iqm_interval([[[0.5, math.nan]]], [0.2])


def test_probability_of_improvement_with_a_tie() -> None:
    a = [0.8, 0.7, 0.6, 0.5]
    b = [0.7, 0.7, 0.9, 0.4]
    # Per task: win 1, tie 0.5, loss 0, win 1 -> 2.5 / 4.
    assert probability_of_improvement(a, b) == pytest.approx(0.625)
    assert probability_of_improvement(b, a) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="one score per task"):
        probability_of_improvement(a, b[:3])
