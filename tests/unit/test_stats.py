import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from ssl_bench.stats import (
    MIN_SEEDS,
    benjamini_hochberg,
    bootstrap_interval,
    friedman,
    holm,
    iqm_interval,
    iqm_normalised,
    nemenyi_q,
    probability_of_improvement,
    probability_of_improvement_interval,
    seed_comparison,
)

# --- seed_comparison ---


def test_welch_on_a_hand_example() -> None:
    # a = 0.5, 0.6, 0.55 (mean 0.55, var 0.0025); b = 0.4, 0.45, 0.42 (mean 0.4233, var 0.000633).
    # se = sqrt(0.0025/3 + 0.000633/3) = 0.03222; t = 0.12667 / 0.03222 = 3.931;
    # Welch-Satterthwaite df = se^4 / ((0.0025/3)^2/2 + (0.000633/3)^2/2) = 2.837.
    result = seed_comparison([0.5, 0.6, 0.55], [0.4, 0.45, 0.42])
    se = math.sqrt(0.0025 / 3 + 0.0019 / 9)
    df = se**4 / ((0.0025 / 3) ** 2 / 2 + (0.0019 / 9) ** 2 / 2)
    assert result.test == "welch"
    assert result.difference == pytest.approx(0.38 / 3)
    assert result.p_value == pytest.approx(2 * sps.t.sf(0.38 / 3 / se, df))
    assert result.p_value == pytest.approx(0.0304, abs=5e-4)
    half = sps.t.ppf(0.975, df) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((0.38 / 3 - half, 0.38 / 3 + half))


def test_a_single_encoder_is_one_draw_against_the_other_sides_spread() -> None:
    # The checkpoint's seeds (0.62, 0.63, 0.61) only redraw its head; scratch's (0.5, 0.6, 0.7, 0.4) redraw the
    # encoder too. t = (0.62 - 0.55) / (s_b sqrt(1 + 1/4)), s_b = sd(0.4..0.7) = 0.1291, on 3 degrees of freedom.
    result = seed_comparison([0.62, 0.63, 0.61], [0.5, 0.6, 0.7, 0.4], a_single_encoder=True)
    se = 0.1290994 * math.sqrt(1.25)
    assert result.test == "prediction"
    assert result.difference == pytest.approx(0.07)
    assert result.p_value == pytest.approx(2 * sps.t.sf(0.07 / se, 3), rel=1e-5)
    assert result.p_value > 0.5  # well inside scratch's spread, however tight its own seeds are
    assert result.ci_low == pytest.approx(0.07 - sps.t.ppf(0.975, 3) * se, rel=1e-5)
    # The same numbers as two varying sides would have looked far more certain.
    assert seed_comparison([0.62, 0.63, 0.61], [0.5, 0.6, 0.7, 0.4]).p_value < result.p_value
    # Either side may be the single encoder: the roles swap, the sign flips.
    swapped = seed_comparison([0.5, 0.6, 0.7, 0.4], [0.62, 0.63, 0.61], b_single_encoder=True)
    assert swapped.difference == pytest.approx(-0.07) and swapped.p_value == pytest.approx(result.p_value)


def test_paired_seeds_compare_their_differences() -> None:
    # Pairs drew the same random numbers: d = 0.05, 0.04, 0.03 (mean 0.04, sd 0.01), se = 0.01 / sqrt(3),
    # t = 6.93 on 2 degrees of freedom, p = 0.0202 (scipy.stats.ttest_rel gives the same).
    a, b = [0.60, 0.70, 0.65], [0.55, 0.66, 0.62]
    result = seed_comparison(a, b, paired=True)
    se = 0.01 / math.sqrt(3)
    assert result.test == "paired"
    assert result.difference == pytest.approx(0.04)
    assert result.p_value == pytest.approx(2 * sps.t.sf(0.04 / se, 2)) and result.p_value == pytest.approx(
        0.0202, abs=1e-4
    )
    half = sps.t.ppf(0.975, 2) * se
    assert (result.ci_low, result.ci_high) == pytest.approx((0.04 - half, 0.04 + half))
    # Unpaired, what the pairs share (0.55 to 0.70 between seeds) hides the difference.
    assert seed_comparison(a, b).p_value > 0.3
    # The order of the pairs matters, not of either side alone.
    assert seed_comparison(a, b[::-1], paired=True).p_value > 0.3
    # A single encoder is one draw whatever the seeds: pairing does not apply.
    assert seed_comparison(a, b, paired=True, b_single_encoder=True).test == "prediction"
    with pytest.raises(ValueError, match="as many scores a side"):
        seed_comparison(a, [0.5, 0.6, 0.7, 0.8], paired=True)


def test_below_the_seeds_a_claim_needs_there_is_no_comparison() -> None:
    assert MIN_SEEDS == 3
    assert seed_comparison([0.9, 0.91], [0.1, 0.11, 0.12]) is None
    assert seed_comparison([0.9, 0.91, 0.92], [0.1]) is None
    assert seed_comparison([0.9], [0.1, 0.2, 0.3], a_single_encoder=True) is not None  # one draw is all it is
    assert seed_comparison([0.9, 0.9], [0.1, 0.1], a_single_encoder=True, b_single_encoder=True) is None


def test_no_spread_gives_p_one_for_equal_means_and_untestable_otherwise() -> None:
    same = seed_comparison([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    assert (same.p_value, same.difference, same.ci_low, same.ci_high) == (1.0, 0.0, 0.0, 0.0)
    assert math.isnan(seed_comparison([0.6, 0.6, 0.6], [0.5, 0.5, 0.5]).p_value)


def test_seed_comparison_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        seed_comparison([0.1, np.nan, 0.3], [0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="1-D"):
        seed_comparison([[0.1, 0.2, 0.3]], [0.2, 0.3, 0.4])


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


def test_benjamini_hochberg_on_a_hand_example() -> None:
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04 times m / rank: 0.02, 0.02, 0.04, 0.04; the running minimum from the
    # largest down leaves them so. Holm would give 0.02, 0.03, 0.06, 0.06.
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    # 0.03 x 3 / 1 = 0.09 is above 0.04 x 3 / 2 = 0.06: the running minimum from above brings it down to 0.06.
    assert benjamini_hochberg([0.04, 0.03, 0.5]) == pytest.approx([0.06, 0.06, 0.5])
    assert benjamini_hochberg([]) == []


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


def test_iqm_interval_collapses_when_no_seed_varies() -> None:
    # Every seed of a task scores alike, so no resample moves a task's mean: the interval is the point IQM.
    seeds = [[0.7, 0.7], [0.4, 0.4, 0.4], [0.9, 0.9], [0.2, 0.2]]
    scratch = [[0.5, 0.5], [0.2, 0.2], [0.6, 0.6, 0.6], [0.0, 0.0]]
    # Normalised means: (0.7-0.5)/0.5 = 0.4, 0.25, 0.75, 0.2 -> sorted 0.2 | 0.25, 0.4 | 0.75 -> IQM 0.325.
    low, high = iqm_interval(seeds, scratch)
    assert low == pytest.approx(0.325) and high == pytest.approx(0.325)


def test_iqm_interval_holds_the_point_value_and_narrows_with_more_seeds() -> None:
    rng = np.random.default_rng(3)
    base = np.array([0.5, 0.4, 0.6, 0.3])

    def width(n_seeds: int) -> float:
        seeds = [np.clip(rng.normal(m + 0.1, 0.05, n_seeds), 0, 1) for m in base]
        scratch = [np.clip(rng.normal(m, 0.05, n_seeds), 0, 1) for m in base]
        point = iqm_normalised([s.mean() for s in seeds], [s.mean() for s in scratch])
        low, high = iqm_interval(seeds, scratch)
        assert low < point < high
        return high - low

    assert width(100) < 0.5 * width(6)


def test_iqm_interval_needs_two_seeds_a_side_and_is_deterministic_given_the_seed() -> None:
    seeds, scratch = [np.linspace(0.5, 0.9, 5), np.linspace(0.2, 0.6, 5)], [[0.4, 0.5], [0.3, 0.2]]
    assert iqm_interval(seeds, scratch, seed=1) == iqm_interval(seeds, scratch, seed=1)
    assert iqm_interval(seeds, scratch, seed=1) != iqm_interval(seeds, scratch, seed=2)
    assert all(math.isnan(v) for v in iqm_interval(seeds, [[0.4], [0.3, 0.2]]))


def test_iqm_interval_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="one entry per task"):
        iqm_interval([[0.5, 0.6]], [[0.2, 0.3], [0.1, 0.2]])
    with pytest.raises(ValueError, match="at least 1"):
        iqm_interval([[0.5, 0.6], []], [[0.2, 0.3], [0.1, 0.2]])
    with pytest.raises(ValueError, match="NaN"):
        iqm_interval([[0.5, math.nan]], [[0.2, 0.3]])


def test_probability_of_improvement_with_one_seed_a_task_and_a_tie() -> None:
    a = [[0.8], [0.7], [0.6], [0.5]]
    b = [[0.7], [0.7], [0.9], [0.4]]
    # Per task: win 1, tie 0.5, loss 0, win 1 -> 2.5 / 4.
    assert probability_of_improvement(a, b) == pytest.approx(0.625)
    assert probability_of_improvement(b, a) == pytest.approx(0.375)
    with pytest.raises(ValueError, match="one entry per task"):
        probability_of_improvement(a, b[:3])


def test_probability_of_improvement_counts_every_pair_of_seeds() -> None:
    # Task 1: a's 0.5, 0.7 against b's 0.6, 0.6, 0.7: of 6 pairs, a wins 2 (0.7 > 0.6 twice), ties 1 -> 2.5 / 6.
    # Task 2: a's 0.9 beats both of b's -> 1. Mean (2.5/6 + 1) / 2 = 0.7083.
    a, b = [[0.5, 0.7], [0.9]], [[0.6, 0.6, 0.7], [0.1, 0.2]]
    assert probability_of_improvement(a, b) == pytest.approx((2.5 / 6 + 1) / 2)


def test_the_chance_to_beat_carries_its_uncertainty() -> None:
    # Every seed of A beats every seed of B, 3 a side: the estimate is 1 but the interval is not a point. Its lower
    # end solves (1 - p - 1/18)^2 = z^2 V(p), Hanley & McNeil's V(p) = p(1-p)/9 (1 + (k - 1)((1-p)/(2-p) + p/(1+p)))
    # with k = 2, and 1/18 half the estimate's step of 1/9.
    def gap(p: float) -> float:
        variance = p * (1 - p) / 9 * (1 + (1 - p) / (2 - p) + p / (1 + p))
        return (1 - p - 1 / 18) ** 2 - sps.norm.ppf(0.975) ** 2 * variance

    low, high = probability_of_improvement_interval([[0.9, 0.91, 0.92]], [[0.1, 0.11, 0.12]])
    assert low == pytest.approx(optimize.brentq(gap, 0.3, 0.9), abs=2e-5) and high == 1.0
    assert low == pytest.approx(0.523, abs=1e-3)
    # One column whose seeds overlap: the point is inside a wide interval.
    low, high = probability_of_improvement_interval([[0.50, 0.55, 0.60]], [[0.48, 0.53, 0.58]])
    assert low < probability_of_improvement([[0.50, 0.55, 0.60]], [[0.48, 0.53, 0.58]]) < high and high - low > 0.5
    # More columns that agree narrow it.
    five = probability_of_improvement_interval([[0.9, 0.91, 0.92]] * 5, [[0.1, 0.11, 0.12]] * 5)
    assert five[0] > 0.85 and five[1] == 1.0
    # A single seed has no spread to judge by.
    assert all(math.isnan(v) for v in probability_of_improvement_interval([[0.9]], [[0.1, 0.2]]))
